"""The long-lived things a gateway process holds: settings, the pool, the Temporal client,
and the feeds of the turns it relays."""

from __future__ import annotations

from dataclasses import dataclass, field

from temporalio.client import Client

from gateway.auth import TokenVerifier
from gateway.desk_watch import ApprovalWatch
from gateway.feed import Feeds
from gateway.http_limits import AddressRates
from gateway.parsing import DocumentParser
from gateway.socket_limits import IpConnections
from parley.model_keys import ModelKeys
from parley.settings import Settings
from parley.storage.db import Pool


@dataclass
class Services:
    settings: Settings
    pool: Pool
    temporal: Client
    feeds: Feeds
    parser: DocumentParser = field(default_factory=DocumentParser)
    verifier: TokenVerifier | None = None  # PARLEY_AUTH=jwt
    model_keys: ModelKeys = field(init=False)

    def __post_init__(self) -> None:
        self.model_keys = ModelKeys(self.settings)

    ip_connections: IpConnections = field(default_factory=lambda: IpConnections(0))
    http_rates: AddressRates = field(default_factory=lambda: AddressRates(0))
    approval_watch: ApprovalWatch = field(default_factory=ApprovalWatch)  # the desk's polls
