"""Tools' customer-facing labels, shared by the workers (which know the tools) with the
gateway (which serves them to the widget)."""

from __future__ import annotations

from collections.abc import Mapping

from parley.storage.db import Conn


async def record(conn: Conn, labels: Mapping[str, str | None]) -> None:
    """Store a worker's tools' labels; a tool of its registry without one loses any it had."""
    labelled = {name: label for name, label in labels.items() if label}
    async with conn.transaction():
        await conn.execute(
            "delete from tool_labels where name = any(%s)",
            ([name for name, label in labels.items() if not label],),
        )
        if labelled:
            await conn.execute(
                "insert into tool_labels (name, label)"
                " select * from unnest(%s::text[], %s::text[])"
                " on conflict (name) do update set label = excluded.label, updated_at = now()",
                (list(labelled), list(labelled.values())),
            )


async def labels(conn: Conn) -> dict[str, str]:
    """Every labelled tool's label, by tool name."""
    cur = await conn.execute("select name, label from tool_labels order by name")
    return {row["name"]: row["label"] async for row in cur}
