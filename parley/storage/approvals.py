"""Approvals: a write tool's pending question, and the one decision it gets.

Every decision is a single guarded UPDATE (`decision is null`), so of several concurrent
confirms, an expiry and a cancel, exactly one wins; the row is the audit record of who
decided what, and when. Questions and decisions are counted here (`parley.metrics`), by
the statement that made them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from parley import metrics
from parley.storage.db import Conn
from parley.storage.sessions import as_uuid
from parley.turn.record import RecordedDecision
from parley.turn.types import Verdict


@dataclass(frozen=True)
class Claimed:
    """A verdict this caller won, to be delivered to the turn's workflow."""

    approval_id: str
    turn_id: str
    request_id: str
    approved: bool
    stream: bool = True  # the turn's own `stream` flag


async def record(
    conn: Conn,
    *,
    approval_id: str,
    turn_id: str,
    session_id: str,
    request_id: str,
    tool_call_id: str,
    tool_name: str,
    arguments: dict[str, Any],
    description: str,
    deadline: datetime,
) -> None:
    """Record a pending approval (idempotent for a retried activity)."""
    cur = await conn.execute(
        "insert into approvals (id, turn_id, session_id, request_id, tool_call_id, tool_name,"
        " arguments, description, deadline) values (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " on conflict (id) do nothing",
        (
            uuid.UUID(approval_id),
            turn_id,
            session_id,
            request_id,
            tool_call_id,
            tool_name,
            Jsonb(arguments),
            description,
            deadline,
        ),
    )
    if cur.rowcount == 1:
        metrics.APPROVALS_ASKED.inc()


async def claim(conn: Conn, session_id: str, *, approved: bool, decided_by: str) -> Claimed | None:
    """Decide the session's pending, unexpired approval; None when there is none to decide."""
    sid = as_uuid(session_id)
    if sid is None:
        return None
    cur = await conn.execute(
        "update approvals a set decision = %s, decided_by = %s, decided_at = now()"
        " from turns t where t.id = a.turn_id"
        " and a.session_id = %s and a.decision is null and a.deadline > now()"
        " returning a.id, a.turn_id, a.request_id, t.stream",
        ("approved" if approved else "denied", decided_by, sid),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    metrics.APPROVALS_DECIDED.labels("approved" if approved else "denied").inc()
    return Claimed(str(row["id"]), row["turn_id"], row["request_id"], approved, row["stream"])


async def expire(conn: Conn, approval_id: str) -> Verdict:
    """Mark the approval expired unless it was decided first; returns its decision."""
    cur = await conn.execute(
        "update approvals set decision = 'expired', decided_by = 'timeout', decided_at = now()"
        " where id = %s and decision is null returning decision",
        (uuid.UUID(approval_id),),
    )
    row = await cur.fetchone()
    if row is not None:
        metrics.APPROVALS_DECIDED.labels("expired").inc()
    else:
        cur = await conn.execute(
            "select decision from approvals where id = %s", (uuid.UUID(approval_id),)
        )
        row = await cur.fetchone()
    assert row is not None, f"approval {approval_id} vanished"
    return row["decision"]


async def cancel_pending(conn: Conn, turn_id: str) -> None:
    """A turn that ends while parked leaves its question decided as `cancelled`."""
    cur = await conn.execute(
        "update approvals set decision = 'cancelled', decided_by = 'turn ended',"
        " decided_at = now() where turn_id = %s and decision is null",
        (turn_id,),
    )
    if cur.rowcount > 0:
        metrics.APPROVALS_DECIDED.labels("cancelled").inc(cur.rowcount)


async def pending_count(conn: Conn) -> int:
    """Approvals waiting for a person, across the deployment (a partial index's size)."""
    cur = await conn.execute("select count(*) as n from approvals where decision is null")
    row = await cur.fetchone()
    return int(row["n"]) if row else 0


async def mark_delivered(conn: Conn, approval_id: str) -> None:
    """The verdict reached its turn's workflow: the reconciler leaves it alone from now on."""
    await conn.execute(
        "update approvals set delivered_at = now() where id = %s and delivered_at is null",
        (uuid.UUID(approval_id),),
    )


async def undelivered(conn: Conn, older_than_seconds: float) -> list[Claimed]:
    """Verdicts claimed but never signalled (their gateway died between claim and signal)."""
    cur = await conn.execute(
        "select id, turn_id, request_id, decision from approvals"
        " where decision in ('approved', 'denied') and delivered_at is null"
        " and decided_at < now() - make_interval(secs => %s) order by decided_at limit 100",
        (older_than_seconds,),
    )
    rows = await cur.fetchall()
    return [
        Claimed(str(r["id"]), r["turn_id"], r["request_id"], r["decision"] == "approved")
        for r in rows
    ]


async def turn_decisions(conn: Conn, turn_id: str) -> list[RecordedDecision]:
    """The turn's decided approvals, in the order they were asked (for its reply's record)."""
    cur = await conn.execute(
        "select tool_call_id, tool_name, decision, description from approvals"
        " where turn_id = %s and decision is not null order by created_at",
        (turn_id,),
    )
    return [
        RecordedDecision(
            kind="approval",
            tool_call_id=r["tool_call_id"],
            tool=r["tool_name"],
            outcome=r["decision"],
            description=r["description"],
        )
        for r in await cur.fetchall()
    ]
