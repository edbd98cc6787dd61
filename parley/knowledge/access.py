"""Who is asking: a requester's organization, user id and the groups they belong to
(what a document's group access list matches)."""

from __future__ import annotations

from parley.knowledge.types import Requester
from parley.storage.db import Conn


async def set_user_groups(conn: Conn, org_id: str, user_id: str, groups: list[str]) -> None:
    """Replace the groups `user_id` belongs to in `org_id` (what group access lists match)."""
    async with conn.transaction():
        await conn.execute(
            "delete from user_groups where org_id = %s and user_id = %s", (org_id, user_id)
        )
        async with conn.cursor() as cur:
            await cur.executemany(
                "insert into user_groups (org_id, user_id, group_id) values (%s, %s, %s)",
                [(org_id, user_id, g) for g in sorted(set(groups))],
            )


async def requester(
    conn: Conn, org_id: str, user_id: str | None, groups: list[str] | None = None
) -> Requester:
    """The requester with the groups they belong to (what group access lists match):
    `groups` when their token named them, else the groups set through the admin API."""
    if groups is not None:
        return Requester(org_id, user_id, tuple(sorted(set(groups))))
    return Requester(org_id, user_id, await requester_groups(conn, org_id, user_id))


async def requester_groups(conn: Conn, org_id: str, user_id: str | None) -> tuple[str, ...]:
    if user_id is None:
        return ()
    cur = await conn.execute(
        "select group_id from user_groups where org_id = %s and user_id = %s order by group_id",
        (org_id, user_id),
    )
    return tuple(r["group_id"] for r in await cur.fetchall())
