"""The conversation log: persisted user and agent messages, paged newest first.

Pages are keyed on `seq`, the per-database identity column, not on `created_at`: many
messages can share a timestamp, but no two share a sequence number.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from parley.storage.db import Conn
from parley.storage.sessions import as_uuid
from parley.turn.types import UserMessage

Direction = Literal["inbound", "outbound"]


@dataclass(frozen=True)
class Message:
    id: str
    seq: int
    direction: Direction
    text: str
    created_at: datetime


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
) -> Message:
    """Append one message; a repeated `message_id` returns the stored row unchanged."""
    mid = uuid.UUID(message_id) if message_id else uuid.uuid4()
    cur = await conn.execute(
        "insert into messages (id, conversation_id, participant_id, direction, text, turn_id,"
        " created_at) values (%s, %s, %s, %s, %s, %s, coalesce(%s, now()))"
        " on conflict (id) do nothing returning id, seq, direction, text, created_at",
        (mid, conversation_id, participant_id, direction, text, turn_id, created_at),
    )
    row = await cur.fetchone()
    if row is None:
        cur = await conn.execute(
            "select id, seq, direction, text, created_at from messages where id = %s", (mid,)
        )
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
        "select id, seq, direction, text, created_at from messages"
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
    )
