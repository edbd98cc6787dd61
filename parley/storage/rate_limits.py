"""Rate counters shared by every gateway: how many times a subject did something lately.

A counter is one row per (limit, subject), a fixed window that opens at the subject's first
hit and lasts the limit's period (so a subject's quota does not depend on where a clock
boundary falls). A hit is admitted while the window holds fewer than the limit's hits, and
only admitted hits count: a client that keeps knocking is not locked out longer for it. All
of it is one statement per check, and PostgreSQL's clock is the only clock, so gateways on
hosts whose clocks disagree still share one window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from parley.storage.db import Conn


@dataclass(frozen=True)
class Window:
    """At most `limit` hits per `seconds` for `subject` under the limit `name`."""

    name: str
    subject: str
    limit: int
    seconds: float


@dataclass(frozen=True)
class Refusal:
    window: Window
    retry_after: float  # seconds until the window ends and the subject may try again


# The upsert admits or refuses each wanted hit; the outer select reads the refused ones'
# windows from the statement's snapshot (a refused row was not changed by it).
_HIT = """
with want as (
    select * from unnest(%(names)s::text[], %(subjects)s::text[], %(limits)s::int[],
                         %(seconds)s::float8[]) as w (name, subject, max_hits, seconds)
), hit as (
    insert into rate_counters as c (name, subject, window_end, hits)
    select name, subject, now() + make_interval(secs => seconds), 1 from want
    on conflict (name, subject) do update set
        window_end = case when c.window_end <= now() then excluded.window_end
                          else c.window_end end,
        hits = case when c.window_end <= now() then 1 else c.hits + 1 end
    where c.window_end <= now()
       or c.hits < (select w.max_hits from want w
                    where w.name = c.name and w.subject = c.subject)
    returning c.name, c.subject
)
select want.name, want.subject,
       extract(epoch from c.window_end - now())::float8 as retry_after
from want
left join hit on hit.name = want.name and hit.subject = want.subject
left join rate_counters c on c.name = want.name and c.subject = want.subject
where hit.name is null
"""


async def hit(conn: Conn, windows: Sequence[Window]) -> list[Refusal]:
    """Count one hit in each window that has room; the windows that had none, refused.

    A hit admitted by one window still counts there when another window refuses it.
    """
    if not windows:
        return []
    by_key = {(w.name, w.subject): w for w in windows}
    if len(by_key) != len(windows):
        raise ValueError("a window is given twice")
    cur = await conn.execute(
        _HIT,
        {
            "names": [w.name for w in windows],
            "subjects": [w.subject for w in windows],
            "limits": [w.limit for w in windows],
            "seconds": [w.seconds for w in windows],
        },
    )
    refused = []
    for row in await cur.fetchall():
        window = by_key[(row["name"], row["subject"])]
        # None: a concurrent first hit opened the window after this statement's snapshot.
        retry_after = row["retry_after"]
        refused.append(Refusal(window, window.seconds if retry_after is None else retry_after))
    return refused


async def prune(conn: Conn, grace_seconds: float = 60) -> int:
    """Drop counters whose window ended more than `grace_seconds` ago; how many went."""
    cur = await conn.execute(
        "delete from rate_counters where window_end < now() - make_interval(secs => %s)",
        (grace_seconds,),
    )
    return cur.rowcount
