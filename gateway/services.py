"""The long-lived things a gateway process holds: settings, the pool, the Temporal client."""

from __future__ import annotations

from dataclasses import dataclass

from temporalio.client import Client

from parley.settings import Settings
from parley.storage.db import Pool


@dataclass
class Services:
    settings: Settings
    pool: Pool
    temporal: Client
