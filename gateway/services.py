"""The long-lived things a gateway process holds: settings, the pool, the Temporal client."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client

from parley.settings import Settings


@dataclass
class Services:
    settings: Settings
    pool: AsyncConnectionPool
    temporal: Client
