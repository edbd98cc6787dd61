"""Approvals: a write tool's pending question, and the one decision it gets.

Every decision is a single guarded UPDATE (`decision is null`), so of several concurrent
confirms, an expiry and a cancel, exactly one wins; the row is the audit record of who
decided what, and when. Questions and decisions are counted here (`parley.metrics`), by
the statement that made them.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
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
    approvers: tuple[str, ...] = ("visitor",),
    parameters: dict[str, Any] | None = None,
) -> None:
    """Record a pending approval (idempotent for a retried activity), in the organization of
    the session's visitor, with who may decide it and the tool's schema."""
    cur = await conn.execute(
        "insert into approvals (id, turn_id, session_id, request_id, tool_call_id, tool_name,"
        " arguments, description, deadline, approvers, parameters, org_id)"
        " select %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
        " (select p.org_id from sessions s join participants p on p.id = s.user_participant_id"
        "  where s.id = %s)"
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
            list(approvers),
            Jsonb(parameters) if parameters is not None else None,
            as_uuid(session_id),
        ),
    )
    if cur.rowcount == 1:
        metrics.APPROVALS_ASKED.inc()


async def claim(conn: Conn, session_id: str, *, approved: bool, decided_by: str) -> Claimed | None:
    """Decide the session's pending, unexpired approval that its visitor may decide; None
    when there is none to decide (`awaits_team` tells a team member's apart)."""
    sid = as_uuid(session_id)
    if sid is None:
        return None
    cur = await conn.execute(
        "update approvals a set decision = %s, decided_by = %s, decided_at = now()"
        " from turns t where t.id = a.turn_id"
        " and a.session_id = %s and a.decision is null and a.deadline > now()"
        " and 'visitor' = any(a.approvers)"
        " returning a.id, a.turn_id, a.request_id, t.stream",
        ("approved" if approved else "denied", decided_by, sid),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    metrics.APPROVALS_DECIDED.labels("approved" if approved else "denied").inc()
    return Claimed(str(row["id"]), row["turn_id"], row["request_id"], approved, row["stream"])


async def expire(conn: Conn, approval_id: str) -> Verdict:
    """Mark the approval expired unless it was decided first; returns its decision (the
    expiry of turns that parked before `expire_if_due`)."""
    decision, _ = await _expire(conn, approval_id, "")
    assert decision is not None
    return decision


async def expire_if_due(conn: Conn, approval_id: str) -> tuple[Verdict | None, datetime]:
    """Expire the approval only when it is undecided and its deadline has passed by the
    database's clock (the desk may have moved it later than the turn knows); returns the
    decision that stands (None: still pending) and the stored deadline."""
    return await _expire(conn, approval_id, " and deadline <= now()")


async def _expire(conn: Conn, approval_id: str, due: str) -> tuple[Verdict | None, datetime]:
    aid = uuid.UUID(approval_id)
    cur = await conn.execute(
        "update approvals set decision = 'expired', decided_by = 'timeout', decided_at = now()"
        " where id = %s and decision is null" + due + " returning decision, deadline",
        (aid,),
    )
    row = await cur.fetchone()
    if row is not None:
        metrics.APPROVALS_DECIDED.labels("expired").inc()
    else:
        cur = await conn.execute("select decision, deadline from approvals where id = %s", (aid,))
        row = await cur.fetchone()
    assert row is not None, f"approval {approval_id} vanished"
    return row["decision"], row["deadline"]


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
    """The turn's decided approvals, in the order they were asked (for its reply's record).

    A team member decided one at the desk (its decision is bound by a hash), or would have
    (the visitor was not among its approvers)."""
    cur = await conn.execute(
        "select tool_call_id, tool_name, decision, description,"
        " decision_hash is not null or not ('visitor' = any(approvers)) as team"
        " from approvals where turn_id = %s and decision is not null order by created_at",
        (turn_id,),
    )
    return [
        RecordedDecision(
            kind="approval",
            tool_call_id=r["tool_call_id"],
            tool=r["tool_name"],
            outcome=r["decision"],
            description=r["description"],
            decided_by="team" if r["team"] else "visitor",
        )
        for r in await cur.fetchall()
    ]


async def awaits_team(conn: Conn, session_id: str) -> bool:
    """The session's pending approval is one only a team member (a role) may decide."""
    sid = as_uuid(session_id)
    if sid is None:
        return False
    cur = await conn.execute(
        "select 1 from approvals where session_id = %s and decision is null"
        " and deadline > now() and not ('visitor' = any(approvers))",
        (sid,),
    )
    return await cur.fetchone() is not None


def decision_hash(
    *,
    approval_id: str,
    tool_name: str,
    requested: dict[str, Any],
    approved_arguments: dict[str, Any] | None,
    decision: str,
    decided_by: str,
    note: str | None,
) -> str:
    """SHA-256 over the decision and the arguments it was made on (canonical JSON): the
    audit row's binding, which the write's execution record repeats."""
    body = json.dumps(
        {
            "approval": approval_id,
            "tool": tool_name,
            "requested": requested,
            "approved": approved_arguments,
            "decision": decision,
            "by": decided_by,
            "note": note,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True)
class Pending:
    """An approval waiting at the desk, with what an approver needs to decide it."""

    id: str
    tool_name: str
    description: str
    arguments: dict[str, Any]
    parameters: dict[str, Any] | None
    approvers: list[str]
    created_at: datetime
    deadline: datetime
    conversation_id: str
    requester: dict[str, Any]
    excerpt: list[dict[str, Any]] = field(default_factory=list)
    org_id: str | None = None
    requester_id: str | None = None  # the session's verified user id (token or authContext)
    owner_org: str | None = None  # with owner_subject: the session's principal, if a token
    owner_subject: str | None = None  # opened it

    def requested_by(self, org_id: str, subject: str) -> bool:
        """Four eyes: this principal is whoever the turn ran for (the session's verified
        user, or its owning principal, in the same organization), so not its decider."""
        if (self.owner_org, self.owner_subject) == (org_id, subject):
            return True
        return (self.org_id, self.requester_id) == (org_id, subject)


PENDING_COLUMNS = (
    "select a.id, a.tool_name, a.description, a.arguments, a.parameters, a.approvers,"
    " a.created_at, a.deadline, a.org_id, s.conversation_id, s.owner_org, s.owner_subject,"
    " p.external_id, p.name"
    " from approvals a join sessions s on s.id = a.session_id"
    " join participants p on p.id = s.user_participant_id"
)


def _pending(row: dict[str, Any], excerpt: list[dict[str, Any]]) -> Pending:
    return Pending(
        id=str(row["id"]),
        tool_name=row["tool_name"],
        description=row["description"],
        arguments=row["arguments"],
        parameters=row["parameters"],
        approvers=list(row["approvers"]),
        created_at=row["created_at"],
        deadline=row["deadline"],
        conversation_id=str(row["conversation_id"]),
        requester={"userId": row["external_id"], "name": row["name"]},
        excerpt=excerpt,
        org_id=row["org_id"],
        requester_id=row["external_id"],
        owner_org=row["owner_org"],
        owner_subject=row["owner_subject"],
    )


# An excerpt is context for a decision, not the conversation: each message is cut to
# EXCERPT_CHARS characters (a pasted 7,500-character message would fill the desk's card).
EXCERPT_CHARS = 500
ELLIPSIS = "\u2026"


async def _excerpts(
    conn: Conn, conversation_ids: list[Any], limit: int
) -> dict[str, list[dict[str, Any]]]:
    """The last `limit` messages of each conversation, oldest first, each cut to
    EXCERPT_CHARS (`truncated`, with the full `length`): one statement for a whole page
    (a lateral join on the (conversation_id, seq desc) index), not one per approval."""
    cur = await conn.execute(
        "select c.id as conversation_id, m.direction, left(m.text, %s) as text,"
        " char_length(m.text) as length, m.created_at"
        " from unnest(%s::uuid[]) as c(id) cross join lateral"
        " (select direction, text, created_at, seq from messages"
        "  where conversation_id = c.id order by seq desc limit %s) m"
        " order by c.id, m.seq",
        (EXCERPT_CHARS, list(dict.fromkeys(conversation_ids)), limit),
    )
    found: dict[str, list[dict[str, Any]]] = {}
    for r in await cur.fetchall():
        truncated = r["length"] > EXCERPT_CHARS
        found.setdefault(str(r["conversation_id"]), []).append(
            {
                "role": "user" if r["direction"] == "inbound" else "assistant",
                "text": r["text"].rstrip() + ELLIPSIS if truncated else r["text"],
                "at": r["created_at"].isoformat(),
                "truncated": truncated,
                "length": r["length"],
            }
        )
    return found


# Four eyes, in the statement that decides (as `Pending.requested_by`): the approval `a`'s
# session is not the subject's own (its owning principal, or its verified user id).
_NOT_REQUESTED_BY = (
    " and not exists (select 1 from sessions s join participants p"
    " on p.id = s.user_participant_id where s.id = a.session_id"
    " and ((s.owner_org = a.org_id and s.owner_subject = %s) or p.external_id = %s))"
)


# An organization's pending, unexpired approvals for some roles, the nearest deadline first.
_PENDING_FOR = (
    " where a.org_id = %s and a.decision is null and a.deadline > now()"
    " and a.approvers && %s::text[] order by a.deadline, a.id limit %s"
)
# Every change to an organization's pending approvals NOTIFYs its id here (migration 0015).
CHANGES_CHANNEL = "parley_approvals"


async def pending_for(
    conn: Conn, org_id: str, roles: list[str], *, limit: int = 100, excerpt: int = 6
) -> list[Pending]:
    """The organization's pending, unexpired approvals that one of `roles` may decide,
    the nearest deadline first, each with the conversation's last `excerpt` messages
    (each shortened, see `_excerpts`): two statements, however many approvals."""
    cur = await conn.execute(PENDING_COLUMNS + _PENDING_FOR, (org_id, roles, limit))
    rows = await cur.fetchall()
    if not rows:
        return []
    excerpts = await _excerpts(conn, [r["conversation_id"] for r in rows], excerpt)
    return [_pending(r, excerpts.get(str(r["conversation_id"]), [])) for r in rows]


def pending_version(items: list[tuple[str, datetime]]) -> str:
    """An opaque version of a pending set (its ids and deadlines): a desk's long poll
    answers at once when the set it last saw has a different version."""
    body = "\n".join(sorted(f"{aid} {deadline.isoformat()}" for aid, deadline in items))
    return hashlib.sha256(body.encode()).hexdigest()[:24]


async def pending_version_for(conn: Conn, org_id: str, roles: list[str], *, limit: int) -> str:
    """The version of what `pending_for` would list now, from one cheap query."""
    cur = await conn.execute(
        "select a.id, a.deadline from approvals a" + _PENDING_FOR, (org_id, roles, limit)
    )
    return pending_version([(str(r["id"]), r["deadline"]) for r in await cur.fetchall()])


async def pending_one(
    conn: Conn, approval_id: str, org_id: str, roles: list[str]
) -> Pending | None:
    """One approval the desk may decide (pending, unexpired, in the org, for one of
    `roles`), or None."""
    aid = as_uuid(approval_id)
    if aid is None:
        return None
    cur = await conn.execute(
        PENDING_COLUMNS + " where a.id = %s and a.org_id = %s and a.decision is null"
        " and a.deadline > now() and a.approvers && %s::text[]",
        (aid, org_id, roles),
    )
    row = await cur.fetchone()
    return None if row is None else _pending(row, [])


async def decided_in_org(conn: Conn, approval_id: str, org_id: str) -> bool:
    """The approval exists in the organization and is no longer pending (decided, expired,
    cancelled, or past its deadline)."""
    aid = as_uuid(approval_id)
    if aid is None:
        return False
    cur = await conn.execute(
        "select 1 from approvals where id = %s and org_id = %s"
        " and (decision is not null or deadline <= now())",
        (aid, org_id),
    )
    return await cur.fetchone() is not None


async def claim_at_desk(
    conn: Conn,
    approval_id: str,
    org_id: str,
    roles: list[str],
    *,
    approved: bool,
    decided_by: str,
    arguments: dict[str, Any] | None,
    note: str | None,
    binding: str,
    subject: str,
) -> Claimed | None:
    """Decide one approval from the desk (one guarded UPDATE: of concurrent deciders,
    confirms and the expiry exactly one wins); None when another decision came first, or
    when `subject` is its requester (four eyes, held here too, not only by the caller)."""
    decision = "approved" if approved else "denied"
    cur = await conn.execute(
        "update approvals a set decision = %s, decided_by = %s, decided_at = now(),"
        " approved_arguments = %s, note = %s, decision_hash = %s"
        " from turns t where t.id = a.turn_id and a.id = %s and a.org_id = %s"
        " and a.decision is null and a.deadline > now() and a.approvers && %s::text[]"
        + _NOT_REQUESTED_BY
        + " returning a.id, a.turn_id, a.request_id, t.stream",
        (
            decision,
            decided_by,
            Jsonb(arguments) if arguments is not None else None,
            note,
            binding,
            uuid.UUID(approval_id),
            org_id,
            roles,
            subject,
            subject,
        ),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    metrics.APPROVALS_DECIDED.labels(decision).inc()
    return Claimed(str(row["id"]), row["turn_id"], row["request_id"], approved, row["stream"])


@dataclass(frozen=True)
class Approved:
    """What an approved write runs with: the approved arguments and the decision's hash."""

    approval_id: str
    requested: dict[str, Any]
    arguments: dict[str, Any]
    decision_hash: str | None
    note: str | None
    edited: bool


async def approved_call(conn: Conn, turn_id: str, tool_call_id: str) -> Approved | None:
    """The approved decision on a turn's tool call, or None (not approved, or no row).

    A decision with a hash is checked against it: a row whose arguments no longer match
    the hash it was decided with raises `ValueError` (the write must not run)."""
    cur = await conn.execute(
        "select id, tool_name, arguments, approved_arguments, decided_by, note,"
        " decision_hash from approvals where turn_id = %s and tool_call_id = %s"
        " and decision = 'approved'",
        (turn_id, tool_call_id),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    approved = row["approved_arguments"]
    if row["decision_hash"] is not None:
        expected = decision_hash(
            approval_id=str(row["id"]),
            tool_name=row["tool_name"],
            requested=row["arguments"],
            approved_arguments=approved,
            decision="approved",
            decided_by=row["decided_by"],
            note=row["note"],
        )
        if expected != row["decision_hash"]:
            raise ValueError(f"approval {row['id']}: the decision does not match its hash")
    arguments = approved if approved is not None else row["arguments"]
    return Approved(
        approval_id=str(row["id"]),
        requested=row["arguments"],
        arguments=arguments,
        decision_hash=row["decision_hash"],
        note=row["note"],
        edited=arguments != row["arguments"],
    )


async def set_description(conn: Conn, approval_id: str, description: str) -> None:
    """The sentence rebuilt for the arguments an approver approved."""
    await conn.execute(
        "update approvals set description = %s where id = %s",
        (description, uuid.UUID(approval_id)),
    )


@dataclass(frozen=True)
class Extended:
    approval_id: str
    turn_id: str
    deadline: datetime


async def extend(
    conn: Conn, approval_id: str, org_id: str, roles: list[str], seconds: int, *, subject: str
) -> Extended | None:
    """Move a pending, unexpired approval's deadline `seconds` later (at most 30 days from
    now); None when it is not pending (or not the desk's to extend, or `subject` asked)."""
    aid = as_uuid(approval_id)
    if aid is None:
        return None
    cur = await conn.execute(
        "update approvals a set deadline = least(a.deadline + make_interval(secs => %s),"
        " now() + interval '30 days'), extended_at = now(), extension_delivered_at = null"
        " where a.id = %s and a.org_id = %s and a.decision is null and a.deadline > now()"
        " and a.approvers && %s::text[]"
        + _NOT_REQUESTED_BY
        + " returning a.id, a.turn_id, a.deadline",
        (seconds, aid, org_id, roles, subject, subject),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return Extended(str(row["id"]), row["turn_id"], row["deadline"])


async def approval_of_call(conn: Conn, turn_id: str, tool_call_id: str) -> str | None:
    """The id of the approval a turn's tool call parked on."""
    cur = await conn.execute(
        "select id from approvals where turn_id = %s and tool_call_id = %s",
        (turn_id, tool_call_id),
    )
    row = await cur.fetchone()
    return str(row["id"]) if row is not None else None


async def mark_extension_delivered(conn: Conn, extended: Extended) -> None:
    """The turn was told of this deadline (a later extension is told again)."""
    await conn.execute(
        "update approvals set extension_delivered_at = now()"
        " where id = %s and deadline = %s and extension_delivered_at is null",
        (uuid.UUID(extended.approval_id), extended.deadline),
    )


async def undelivered_extensions(conn: Conn, older_than_seconds: float) -> list[Extended]:
    """Pending approvals whose moved deadline their turn was never told of."""
    cur = await conn.execute(
        "select id, turn_id, deadline from approvals where extended_at is not null"
        " and extension_delivered_at is null and decision is null"
        " and extended_at < now() - make_interval(secs => %s) order by extended_at limit 100",
        (older_than_seconds,),
    )
    return [Extended(str(r["id"]), r["turn_id"], r["deadline"]) for r in await cur.fetchall()]
