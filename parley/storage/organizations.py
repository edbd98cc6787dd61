"""Per-organization settings: today, the persona that replaces the default system prompt."""

from __future__ import annotations

from parley.storage.db import Conn


async def persona(conn: Conn, org_id: str) -> str | None:
    cur = await conn.execute("select persona from organizations where id = %s", (org_id,))
    row = await cur.fetchone()
    return row["persona"] if row else None


async def set_persona(conn: Conn, org_id: str, text: str | None) -> None:
    await conn.execute(
        "insert into organizations (id, persona) values (%s, %s)"
        " on conflict (id) do update set persona = excluded.persona, updated_at = now()",
        (org_id, text),
    )
