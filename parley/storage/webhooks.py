"""Organizations' webhooks, and the approval announcements they receive."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from parley.storage.db import Conn


@dataclass(frozen=True)
class Webhook:
    url: str
    secret: str


async def set_webhook(conn: Conn, org_id: str, url: str, secret: str) -> None:
    await conn.execute(
        "insert into org_webhooks (org_id, url, secret) values (%s, %s, %s)"
        " on conflict (org_id) do update set url = excluded.url, secret = excluded.secret,"
        " updated_at = now()",
        (org_id, url, secret),
    )


async def delete_webhook(conn: Conn, org_id: str) -> bool:
    cur = await conn.execute("delete from org_webhooks where org_id = %s", (org_id,))
    return cur.rowcount > 0


async def webhook(conn: Conn, org_id: str) -> Webhook | None:
    cur = await conn.execute("select url, secret from org_webhooks where org_id = %s", (org_id,))
    row = await cur.fetchone()
    return None if row is None else Webhook(row["url"], row["secret"])


async def approval_webhook(conn: Conn, approval_id: str) -> Webhook | None:
    """The webhook of the approval's organization, if it has one."""
    cur = await conn.execute(
        "select w.url, w.secret from approvals a join org_webhooks w on w.org_id = a.org_id"
        " where a.id = %s",
        (uuid.UUID(approval_id),),
    )
    row = await cur.fetchone()
    return None if row is None else Webhook(row["url"], row["secret"])


async def approval_payload(conn: Conn, approval_id: str) -> dict[str, Any] | None:
    """The approval as its announcement shows it (no session id: it grants access)."""
    cur = await conn.execute(
        "select a.*, s.conversation_id from approvals a join sessions s on s.id = a.session_id"
        " where a.id = %s",
        (uuid.UUID(approval_id),),
    )
    r = await cur.fetchone()
    if r is None:
        return None

    def when(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "org": r["org_id"],
        "approval": {
            "id": str(r["id"]),
            "tool": r["tool_name"],
            "sentence": r["description"],
            "arguments": r["arguments"],
            "approvedArguments": r["approved_arguments"],
            "approvers": list(r["approvers"]),
            "conversationId": str(r["conversation_id"]),
            "requestedAt": when(r["created_at"]),
            "deadline": when(r["deadline"]),
            "decision": r["decision"],
            "decidedBy": r["decided_by"],
            "decidedAt": when(r["decided_at"]),
            "note": r["note"],
            "decisionHash": r["decision_hash"],
        },
    }
