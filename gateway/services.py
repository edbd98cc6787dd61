"""The long-lived things a gateway process holds: settings, the pool, the Temporal client,
and the feeds of the turns it relays."""

from __future__ import annotations

from dataclasses import dataclass, field

from temporalio.client import Client

from gateway.feed import Feeds
from gateway.parsing import DocumentParser
from gateway.socket_limits import IpConnections
from parley.settings import Settings
from parley.storage.db import Pool


@dataclass
class Services:
    settings: Settings
    pool: Pool
    temporal: Client
    feeds: Feeds
    parser: DocumentParser = field(default_factory=DocumentParser)
    ip_connections: IpConnections = field(default_factory=lambda: IpConnections(0))
