"""Escalations: conversations the agent handed to a person, until a person resolves them.

A conversation has at most one open escalation (a partial unique index): asking again while
one is open updates its reason and turn, so the human team's queue holds each waiting
conversation once, with the latest reason, since the time it started waiting.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from parley.storage.db import Conn
from parley.storage.sessions import as_uuid

EscalationStatus = Literal["open", "resolved"]


@dataclass(frozen=True)
class Escalation:
    id: str
    conversation_id: str
    org_id: str
    agent_id: str
    reason: str
    status: EscalationStatus
    created_at: datetime
    updated_at: datetime
    resolved_at: datetime | None
    resolved_by: str | None


_COLUMNS = (
    "id, conversation_id, org_id, agent_id, reason, status, created_at, updated_at,"
    " resolved_at, resolved_by"
)


def _escalation(row: dict) -> Escalation:
    return Escalation(
        id=str(row["id"]),
        conversation_id=str(row["conversation_id"]),
        org_id=row["org_id"],
        agent_id=row["agent_id"],
        reason=row["reason"],
        status=row["status"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        resolved_at=row["resolved_at"],
        resolved_by=row["resolved_by"],
    )


async def escalate(conn: Conn, turn_id: str, reason: str) -> Escalation | None:
    """Mark the turn's conversation as waiting for a person; None when no such turn.

    Idempotent for a retried tool call: it writes the same values again.
    """
    cur = await conn.execute(
        f"insert into escalations (id, conversation_id, org_id, agent_id, turn_id, reason)"
        f" select %s, c.id, c.org_id, c.agent_id, t.id, %s from turns t"
        f" join sessions s on s.id = t.session_id join conversations c on c.id = s.conversation_id"
        f" where t.id = %s"
        f" on conflict (conversation_id) where status = 'open' do update"
        f" set reason = excluded.reason, turn_id = excluded.turn_id, updated_at = now()"
        f" returning {_COLUMNS}",
        (uuid.uuid4(), reason, turn_id),
    )
    row = await cur.fetchone()
    return _escalation(row) if row else None


async def turn_reason(conn: Conn, turn_id: str) -> str | None:
    """Why the turn handed its conversation to a person; None when it did not."""
    cur = await conn.execute(
        "select reason from escalations where turn_id = %s order by updated_at desc limit 1",
        (turn_id,),
    )
    row = await cur.fetchone()
    return row["reason"] if row else None


async def list_escalations(
    conn: Conn, org_id: str, status: EscalationStatus | None, limit: int
) -> list[Escalation]:
    """The organization's escalations (`status` None: all), the longest waiting first."""
    cur = await conn.execute(
        f"select {_COLUMNS} from escalations where org_id = %s"
        " and (%s::text is null or status = %s::text) order by created_at, id limit %s",
        (org_id, status, status, limit),
    )
    return [_escalation(r) for r in await cur.fetchall()]


async def resolve(
    conn: Conn, org_id: str, escalation_id: str, resolved_by: str
) -> Escalation | None:
    """Mark an escalation of the organization resolved (again: unchanged); None when the
    organization has no such escalation."""
    eid = as_uuid(escalation_id)
    if eid is None:
        return None
    cur = await conn.execute(
        f"update escalations set status = 'resolved', resolved_at = now(), resolved_by = %s,"
        f" updated_at = now() where id = %s and org_id = %s and status = 'open'"
        f" returning {_COLUMNS}",
        (resolved_by, eid, org_id),
    )
    row = await cur.fetchone()
    if row is None:
        cur = await conn.execute(
            f"select {_COLUMNS} from escalations where id = %s and org_id = %s", (eid, org_id)
        )
        row = await cur.fetchone()
    return _escalation(row) if row else None
