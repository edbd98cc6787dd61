"""The conversation log: persisted user and agent messages, paged newest first.

Pages are keyed on `seq`, the per-database identity column, not on `created_at`: many
messages can share a timestamp, but no two share a sequence number.

An agent reply carries its record (`structured`, see `parley.turn.record`); a turn stopped or
failed before its reply leaves a marked agent message in its place (`cut_short`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from psycopg.types.json import Jsonb

from parley.storage.db import Conn
from parley.storage.sessions import as_uuid
from parley.turn.record import CUT_SHORT_TEXT, CutShort
from parley.turn.types import UserMessage

Direction = Literal["inbound", "outbound"]


@dataclass(frozen=True)
class Message:
    id: str
    seq: int
    direction: Direction
    text: str
    created_at: datetime
    structured: dict[str, Any] | None = None  # an agent reply's record


_COLUMNS = "id, seq, direction, text, created_at, structured"
# The agent message standing in for a turn's reply that never came: one per turn.
_CUT_SHORT_ID = uuid.UUID("6c1f0a52-3d7e-4c55-9a61-0b8e2f4d7a13")


class UnknownCursor(LookupError):
    """The cursor names no message of this conversation."""


async def add_message(
    conn: Conn,
    *,
    conversation_id: str,
    participant_id: str | None,
    direction: Direction,
    text: str,
    turn_id: str | None = None,
    message_id: str | None = None,
    created_at: datetime | None = None,
    structured: dict[str, Any] | None = None,
) -> Message:
    """Append one message; a repeated `message_id` returns the stored row unchanged."""
    mid = uuid.UUID(message_id) if message_id else uuid.uuid4()
    record = Jsonb(structured) if structured is not None else None
    cur = await conn.execute(
        "insert into messages (id, conversation_id, participant_id, direction, text, turn_id,"
        " created_at, structured) values (%s, %s, %s, %s, %s, %s, coalesce(%s, now()), %s)"
        f" on conflict (id) do nothing returning {_COLUMNS}",
        (mid, conversation_id, participant_id, direction, text, turn_id, created_at, record),
    )
    row = await cur.fetchone()
    if row is None:
        cur = await conn.execute(f"select {_COLUMNS} from messages where id = %s", (mid,))
        row = await cur.fetchone()
    assert row is not None
    return _message(row)


async def add_user_message(
    conn: Conn, conversation_id: str, turn_id: str, message: UserMessage
) -> Message:
    """Store a turn's user message; idempotent (its id was chosen by the workflow)."""
    return await add_message(
        conn,
        conversation_id=conversation_id,
        participant_id=message.participant_id,
        direction="inbound",
        text=message.text,
        turn_id=turn_id,
        message_id=message.message_id,
    )


def cut_short_id(turn_id: str) -> str:
    """The id of the agent message a stopped or failed turn leaves (the same on a retry)."""
    return str(uuid.uuid5(_CUT_SHORT_ID, turn_id))


async def put_cut_short(
    conn: Conn, turn_id: str, cut: CutShort, structured: dict[str, Any]
) -> None:
    """Leave the agent message that stands for the turn's missing reply, or replace its
    record. Only once the turn's user message is stored: the two stay in order, and a
    turn that never stored its user message leaves nothing."""
    await conn.execute(
        "insert into messages (id, conversation_id, participant_id, direction, text, turn_id,"
        " cut_short, structured)"
        " select %s, s.conversation_id, s.agent_participant_id, 'outbound', %s, t.id, %s, %s"
        " from turns t join sessions s on s.id = t.session_id"
        " where t.id = %s and exists"
        " (select 1 from messages m where m.conversation_id = s.conversation_id"
        " and m.turn_id = t.id and m.direction = 'inbound')"
        " on conflict (id) do update set structured = excluded.structured",
        (
            uuid.UUID(cut_short_id(turn_id)),
            CUT_SHORT_TEXT[cut],
            cut,
            Jsonb(structured),
            turn_id,
        ),
    )


async def list_messages(
    conn: Conn, conversation_id: str, *, limit: int, cursor: str | None = None
) -> tuple[list[Message], bool]:
    """Up to `limit` messages older than `cursor`, newest first, and whether more exist."""
    before: int | None = None
    if cursor is not None:
        cid = as_uuid(cursor)
        row = None
        if cid is not None:
            cur = await conn.execute(
                "select seq from messages where id = %s and conversation_id = %s",
                (cid, conversation_id),
            )
            row = await cur.fetchone()
        if row is None:
            raise UnknownCursor(cursor)
        before = row["seq"]
    cur = await conn.execute(
        f"select {_COLUMNS} from messages"
        " where conversation_id = %s and (%s::bigint is null or seq < %s::bigint)"
        " order by seq desc limit %s",
        (conversation_id, before, before, limit + 1),
    )
    rows = await cur.fetchall()
    return [_message(r) for r in rows[:limit]], len(rows) > limit


def _message(row: dict) -> Message:
    return Message(
        id=str(row["id"]),
        seq=row["seq"],
        direction=row["direction"],
        text=row["text"],
        created_at=row["created_at"],
        structured=row["structured"],
    )
