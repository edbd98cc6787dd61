"""An organization's skills (see `parley.skills`): saved, read, listed and deleted."""

from __future__ import annotations

from collections.abc import Sequence

from parley.skills import Skill
from parley.storage.db import Conn


async def get(conn: Conn, org_id: str, name: str) -> Skill | None:
    cur = await conn.execute(
        "select name, prompt, tools from skills where org_id = %s and name = %s", (org_id, name)
    )
    row = await cur.fetchone()
    return _skill(row) if row else None


async def save(conn: Conn, org_id: str, skill: Skill) -> bool:
    """Create or replace a skill; True when it is new."""
    cur = await conn.execute(
        "insert into skills (org_id, name, prompt, tools) values (%s, %s, %s, %s)"
        " on conflict (org_id, name) do update set prompt = excluded.prompt,"
        " tools = excluded.tools, updated_at = now()"
        " returning (xmax = 0) as created",
        (org_id, skill.name, skill.prompt, _tools(skill.tools)),
    )
    row = await cur.fetchone()
    assert row is not None
    return bool(row["created"])


async def list_skills(conn: Conn, org_id: str) -> list[Skill]:
    cur = await conn.execute(
        "select name, prompt, tools from skills where org_id = %s order by name", (org_id,)
    )
    return [_skill(row) for row in await cur.fetchall()]


async def delete(conn: Conn, org_id: str, name: str) -> bool:
    cur = await conn.execute("delete from skills where org_id = %s and name = %s", (org_id, name))
    return cur.rowcount == 1


def _tools(tools: Sequence[str] | None) -> list[str] | None:
    return None if tools is None else list(dict.fromkeys(tools))


def _skill(row: dict) -> Skill:
    tools = row["tools"]
    return Skill(row["name"], row["prompt"], tuple(tools) if tools is not None else None)
