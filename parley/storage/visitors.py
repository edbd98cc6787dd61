"""What a visitor told us about themselves: name, email and phone, on the conversation's user
participant (shared by every session that resumes the conversation).

The identity form (`identity_intake`) writes here; tools read it through
`current_call().identity`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from parley.storage.db import Conn
from parley.storage.sessions import DEFAULT_USER_NAME, as_uuid


@dataclass(frozen=True)
class Identity:
    """The visitor, as far as they (or the page that opened the session) said."""

    name: str | None = None
    email: str | None = None
    phone: str | None = None


async def store_identity(conn: Conn, session_id: str, values: dict[str, Any]) -> None:
    """Keep the accepted values of an identity form; a field left out keeps what was known."""
    await conn.execute(
        "update participants set name = coalesce(%s, name), email = coalesce(%s, email),"
        " phone = coalesce(%s, phone), updated_at = now()"
        " where id = (select user_participant_id from sessions where id = %s)",
        (values.get("name"), values.get("email"), values.get("phone"), as_uuid(session_id)),
    )


async def identity_of_turn(conn: Conn, turn_id: str) -> Identity:
    """The identity of the visitor a turn answers (empty when the turn is unknown)."""
    cur = await conn.execute(
        "select p.name, p.email, p.phone from turns t"
        " join sessions s on s.id = t.session_id"
        " join participants p on p.id = s.user_participant_id where t.id = %s",
        (turn_id,),
    )
    row = await cur.fetchone()
    if row is None:
        return Identity()
    name = row["name"] if row["name"] != DEFAULT_USER_NAME else None
    return Identity(name=name, email=row["email"], phone=row["phone"])
