"""The demo refund tool's ledger (`PARLEY_DEMO=1`): a double refund would show here."""

from __future__ import annotations

from parley.storage.db import Conn


async def record(conn: Conn, *, order_id: str, reason: str | None, call_key: str) -> int:
    """Record a refund; returns its id. Pass the tool call's connection, so the refund
    commits together with the call's execution record."""
    cur = await conn.execute(
        "insert into demo_refunds (order_id, reason, call_key) values (%s, %s, %s) returning id",
        (order_id, reason, call_key),
    )
    row = await cur.fetchone()
    assert row is not None
    return row["id"]
