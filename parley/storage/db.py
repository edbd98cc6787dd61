"""PostgreSQL access: the async connection pool and the schema migrations.

Migrations are plain SQL files in `parley/migrations`, applied in file-name order, each in
its own transaction. A transaction-scoped advisory lock serialises concurrent starters (a
worker and a gateway booting together), and `schema_migrations` makes re-runs no-ops.
"""

from __future__ import annotations

from importlib import resources

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from parley.logs import get_logger

log = get_logger(__name__)

# Every connection Parley opens returns rows as dicts: storage code reads columns by name.
Conn = AsyncConnection[DictRow]
Pool = AsyncConnectionPool[Conn]

# Any constant works; it only has to be the same in every Parley process.
_MIGRATION_LOCK = 0x7061726C6579  # "parley"


def migration_files() -> list[tuple[str, str]]:
    """(version, sql) for every bundled migration, in order."""
    folder = resources.files("parley.storage") / "migrations"
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [(f.name.removesuffix(".sql"), f.read_text()) for f in files]


async def migrate(conninfo: str) -> list[str]:
    """Apply pending migrations; returns the versions applied by this call."""
    applied: list[str] = []
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        async with conn.transaction():
            # `create table if not exists` is not safe against a concurrent create: lock first.
            await conn.execute("select pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            await conn.execute(
                "create table if not exists schema_migrations ("
                " version text primary key, applied_at timestamptz not null default now())"
            )
        for version, sql in migration_files():
            async with conn.transaction():
                await conn.execute("select pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                cur = await conn.execute(
                    "select 1 from schema_migrations where version = %s", (version,)
                )
                if await cur.fetchone():
                    continue
                await conn.execute(sql.encode())
                await conn.execute(
                    "insert into schema_migrations (version) values (%s)", (version,)
                )
                applied.append(version)
                log.info("migration applied", version=version)
    return applied


def create_pool(conninfo: str, *, max_size: int = 10, name: str = "parley") -> Pool:
    """A closed pool; open it with `await pool.open()` (or `async with`)."""
    return AsyncConnectionPool(
        conninfo,
        connection_class=Conn,
        min_size=1,
        max_size=max_size,
        open=False,
        name=name,
        kwargs={"autocommit": True, "row_factory": dict_row},
        check=AsyncConnectionPool.check_connection,
    )


async def ping(conn: Conn) -> None:
    """Raise unless the database answers a trivial query."""
    await conn.execute("select 1")
