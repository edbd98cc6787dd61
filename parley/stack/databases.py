"""Fresh PostgreSQL databases for tests and benches.

The server is the one `DATABASE_URL` names or, unset, an embedded PostgreSQL (pgserver)
in a temporary directory; either way each run creates its own database and drops it
afterwards, so runs never see each other's data and leave nothing behind.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import conninfo, sql


@contextmanager
def embedded_server(prefix: str = "parley-pg-") -> Iterator[str]:
    """An embedded PostgreSQL in a new temporary directory; stopped and deleted after.

    Not under pytest's basetemp: a pytest session that starts meanwhile prunes old basetemps
    and resets their root to mode 0700, which deletes a running server's data or locks out
    PostgreSQL running as the `pgserver` user (under root). Blocking (about half a second).
    """
    from parley.stack.embedded import start_postgres

    with tempfile.TemporaryDirectory(prefix=prefix) as data_dir:
        server = start_postgres(Path(data_dir))
        try:
            yield server.url
        finally:
            server.stop()


@contextmanager
def database_server() -> Iterator[str]:
    """A conninfo for a server on which we may create databases: `DATABASE_URL`, else an
    embedded one for as long as the context lasts."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    with embedded_server() as url:
        yield url


@contextmanager
def fresh_database(server_url: str, prefix: str = "parley_test") -> Iterator[str]:
    """A new, empty database `<prefix>_<random>` on `server_url`; its URL. Dropped after
    (connections still open are closed by the server)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    _admin(server_url, "create database {}", name)
    try:
        yield conninfo.make_conninfo(server_url, dbname=name)
    finally:
        _admin(server_url, "drop database if exists {} with (force)", name)


def _admin(server_url: str, statement: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL(statement).format(sql.Identifier(name)))
