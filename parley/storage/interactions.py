"""Interactions: a turn's structured question to the visitor, and the one answer it gets.

Like approvals, every decision is a single guarded UPDATE (`status is null`), so of several
concurrent submits, an expiry and a cancel, exactly one wins; the row keeps the question,
the accepted values and who answered, when. Questions and decisions are counted here
(`parley.metrics`), by kind, where the statement that makes them wins.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from psycopg.types.json import Jsonb

from parley import metrics
from parley.storage.db import Conn
from parley.storage.sessions import as_uuid
from parley.turn.record import RecordedDecision

# How a question ended. "expired": nobody answered by the deadline; "cancelled": the turn
# was stopped first.
Status = Literal["submitted", "declined", "expired", "cancelled"]
Answer = Literal["submitted", "declined"]  # what a visitor can decide


@dataclass(frozen=True)
class Pending:
    """A session's open question, as a submit checks it."""

    id: str
    kind: str
    spec: dict[str, Any]
    request_id: str


@dataclass(frozen=True)
class Claimed:
    """An answer this caller won, to be delivered to the turn's workflow."""

    interaction_id: str
    turn_id: str
    request_id: str
    status: Answer
    stream: bool = True  # the turn's own `stream` flag


@dataclass(frozen=True)
class Outcome:
    """How a question ended, for the raise tool's result."""

    kind: str
    status: Status
    answer: dict[str, Any] | None


async def record(
    conn: Conn,
    *,
    interaction_id: str,
    turn_id: str,
    session_id: str,
    conversation_id: str,
    request_id: str,
    tool_call_id: str,
    tool_name: str,
    kind: str,
    spec: dict[str, Any],
    reason: str,
    deadline: datetime,
) -> None:
    """Record an open question (idempotent for a retried activity)."""
    cur = await conn.execute(
        "insert into interactions (id, turn_id, session_id, conversation_id, request_id,"
        " tool_call_id, tool_name, kind, spec, reason, deadline)"
        " values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) on conflict do nothing",
        (
            uuid.UUID(interaction_id),
            turn_id,
            session_id,
            conversation_id,
            request_id,
            tool_call_id,
            tool_name,
            kind,
            Jsonb(spec),
            reason,
            deadline,
        ),
    )
    if cur.rowcount == 1:
        metrics.interaction_asked(kind)


async def capabilities(conn: Conn, conversation_id: str) -> list[str]:
    """What the conversation's client said it can render (`supports`)."""
    cur = await conn.execute(
        "select supports from conversations where id = %s", (uuid.UUID(conversation_id),)
    )
    row = await cur.fetchone()
    return list(row["supports"]) if row else []


async def declined_before(conn: Conn, turn_id: str, kind: str) -> bool:
    """Whether the visitor declined a question of this kind earlier in the turn's
    conversation (it is not asked again)."""
    cur = await conn.execute(
        "select exists (select 1 from interactions i"
        " join sessions s on s.conversation_id = i.conversation_id"
        " join turns t on t.session_id = s.id"
        " where t.id = %s and i.kind = %s and i.status = 'declined') as declined",
        (turn_id, kind),
    )
    row = await cur.fetchone()
    return bool(row and row["declined"])


async def pending(conn: Conn, session_id: str) -> Pending | None:
    """The session's open, unexpired question, if any."""
    sid = as_uuid(session_id)
    if sid is None:
        return None
    cur = await conn.execute(
        "select id, kind, spec, request_id from interactions"
        " where session_id = %s and status is null and deadline > now()",
        (sid,),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return Pending(str(row["id"]), row["kind"], row["spec"], row["request_id"])


async def count_invalid(conn: Conn, interaction_id: str, limit: int) -> int | None:
    """Count one more invalid submit of an open question, up to `limit`: the new count, or
    None when the limit is spent (nothing is written then) or the question is closed."""
    cur = await conn.execute(
        "update interactions set invalid_submits = invalid_submits + 1"
        " where id = %s and status is null and deadline > now() and invalid_submits < %s"
        " returning invalid_submits",
        (uuid.UUID(interaction_id), limit),
    )
    row = await cur.fetchone()
    return row["invalid_submits"] if row else None


async def claim(
    conn: Conn,
    interaction_id: str,
    session_id: str,
    *,
    status: Answer,
    answer: dict[str, Any] | None,
    decided_by: str,
) -> Claimed | None:
    """Answer the session's open question `interaction_id`; None when it is no longer open
    (answered, expired, cancelled)."""
    sid = as_uuid(session_id)
    iid = as_uuid(interaction_id)
    if sid is None or iid is None:
        return None
    cur = await conn.execute(
        "update interactions i set status = %s, answer = %s, decided_by = %s,"
        " decided_at = now() from turns t where t.id = i.turn_id"
        " and i.id = %s and i.session_id = %s and i.status is null and i.deadline > now()"
        " returning i.id, i.turn_id, i.request_id, i.kind, t.stream",
        (status, Jsonb(answer) if answer is not None else None, decided_by, iid, sid),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    metrics.interaction_decided(row["kind"], status)
    return Claimed(str(row["id"]), row["turn_id"], row["request_id"], status, row["stream"])


async def expire(conn: Conn, interaction_id: str) -> Status:
    """Close the question as expired unless it was answered first; returns how it ended."""
    iid = uuid.UUID(interaction_id)
    cur = await conn.execute(
        "update interactions set status = 'expired', decided_by = 'timeout', decided_at = now()"
        " where id = %s and status is null returning status, kind",
        (iid,),
    )
    row = await cur.fetchone()
    if row is not None:
        metrics.interaction_decided(row["kind"], "expired")
    else:
        cur = await conn.execute("select status from interactions where id = %s", (iid,))
        row = await cur.fetchone()
    assert row is not None, f"interaction {interaction_id} vanished"
    return row["status"]


async def outcome(conn: Conn, interaction_id: str) -> Outcome:
    cur = await conn.execute(
        "select kind, status, answer from interactions where id = %s",
        (uuid.UUID(interaction_id),),
    )
    row = await cur.fetchone()
    assert row is not None, f"interaction {interaction_id} vanished"
    return Outcome(row["kind"], row["status"], row["answer"])


async def cancel_pending(conn: Conn, turn_id: str) -> None:
    """A turn that ends while parked leaves its question closed as `cancelled`."""
    cur = await conn.execute(
        "update interactions set status = 'cancelled', decided_by = 'turn ended',"
        " decided_at = now() where turn_id = %s and status is null returning kind",
        (turn_id,),
    )
    for row in await cur.fetchall():
        metrics.interaction_decided(row["kind"], "cancelled")


async def pending_count(conn: Conn) -> int:
    """Interactions waiting for a visitor, across the deployment (a partial index's size)."""
    cur = await conn.execute("select count(*) as n from interactions where status is null")
    row = await cur.fetchone()
    return int(row["n"]) if row else 0


async def mark_delivered(conn: Conn, interaction_id: str) -> None:
    """The answer reached its turn's workflow: the reconciler leaves it alone from now on."""
    await conn.execute(
        "update interactions set delivered_at = now() where id = %s and delivered_at is null",
        (uuid.UUID(interaction_id),),
    )


async def undelivered(conn: Conn, older_than_seconds: float) -> list[Claimed]:
    """Answers claimed but never signalled (their gateway died between claim and signal)."""
    cur = await conn.execute(
        "select id, turn_id, request_id, status from interactions"
        " where status in ('submitted', 'declined') and delivered_at is null"
        " and decided_at < now() - make_interval(secs => %s) order by decided_at limit 100",
        (older_than_seconds,),
    )
    return [
        Claimed(str(r["id"]), r["turn_id"], r["request_id"], r["status"])
        for r in await cur.fetchall()
    ]


# How each ending reads in a reply's record (the raise tool's result says the same).
RECORDED_OUTCOME = {
    "submitted": "submitted",
    "declined": "declined",
    "expired": "no_response",
    "cancelled": "cancelled",
}


async def turn_decisions(conn: Conn, turn_id: str) -> list[RecordedDecision]:
    """The turn's closed questions, in the order they were asked (for its reply's record);
    what the visitor was asked is the agent's reason."""
    cur = await conn.execute(
        "select tool_call_id, tool_name, status, reason from interactions"
        " where turn_id = %s and status is not null order by created_at",
        (turn_id,),
    )
    return [
        RecordedDecision(
            kind="interaction",
            tool_call_id=r["tool_call_id"],
            tool=r["tool_name"],
            outcome=RECORDED_OUTCOME[r["status"]],
            description=r["reason"],
        )
        for r in await cur.fetchall()
    ]
