"""What organizations and agents spent today: tokens and USD per UTC day.

The worker adds each model call's usage as soon as the call has its final message (a
retried call made a second request upstream, and counts again); the gateway reads today's
totals before it starts a turn. The day is PostgreSQL's UTC date, one clock for every
process.
"""

from __future__ import annotations

from dataclasses import dataclass

from parley.storage.db import Conn

_TODAY = "(now() at time zone 'utc')::date"


@dataclass(frozen=True)
class Spent:
    tokens: int = 0
    cost_usd: float = 0.0


async def record(conn: Conn, org_id: str, agent_id: str, tokens: int, cost_usd: float) -> None:
    """Add one model call's tokens and cost to today's totals of its org and its agent
    (`agent_id` "": the org only)."""
    rows = [("org", org_id)] + ([("agent", agent_id)] if agent_id else [])
    await conn.execute(
        "insert into usage_daily (day, scope, subject, tokens, cost_usd)"
        f" select {_TODAY}, scope, subject, %(tokens)s, %(cost)s"
        " from unnest(%(scopes)s::text[], %(subjects)s::text[]) as r (scope, subject)"
        " on conflict (day, scope, subject) do update set"
        " tokens = usage_daily.tokens + excluded.tokens,"
        " cost_usd = usage_daily.cost_usd + excluded.cost_usd, updated_at = now()",
        {
            "tokens": tokens,
            "cost": cost_usd,
            "scopes": [scope for scope, _ in rows],
            "subjects": [subject for _, subject in rows],
        },
    )


async def spent_today(conn: Conn, org_id: str, agent_id: str) -> tuple[Spent, Spent]:
    """Today's totals of the organization and of the agent."""
    cur = await conn.execute(
        "select scope, tokens, cost_usd::float8 as cost_usd from usage_daily"
        f" where day = {_TODAY} and ((scope = 'org' and subject = %s)"
        " or (scope = 'agent' and subject = %s))",
        (org_id, agent_id),
    )
    found = {row["scope"]: Spent(row["tokens"], row["cost_usd"]) for row in await cur.fetchall()}
    return found.get("org", Spent()), found.get("agent", Spent())
