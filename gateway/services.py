"""The long-lived things a gateway process holds: settings, the pool, the Temporal client,
and the feeds of the turns it relays."""

from __future__ import annotations

from dataclasses import dataclass

from temporalio.client import Client

from gateway.feed import Feeds
from parley.settings import Settings
from parley.storage.db import Pool


@dataclass
class Services:
    settings: Settings
    pool: Pool
    temporal: Client
    feeds: Feeds
