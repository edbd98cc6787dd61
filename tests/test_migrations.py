"""Schema migrations: ordered, idempotent, and safe when several processes start at once."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
from psycopg import conninfo

from parley.storage import db


async def test_concurrent_starters_apply_each_migration_once(database_server: str) -> None:
    name = f"parley_mig_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_server, autocommit=True) as admin:
        admin.execute(f'create database "{name}"')
    url = conninfo.make_conninfo(database_server, dbname=name)
    try:
        results = await asyncio.gather(*(db.migrate(url) for _ in range(4)))
        versions = [v for v, _ in db.migration_files()]
        assert sorted(v for applied in results for v in applied) == versions  # once each
        assert await db.migrate(url) == []  # and a later start changes nothing
        with psycopg.connect(url) as conn:
            rows = conn.execute("select version from schema_migrations order by version")
            assert [r[0] for r in rows] == versions
    finally:
        with psycopg.connect(database_server, autocommit=True) as admin:
            admin.execute(f'drop database if exists "{name}" with (force)')
