"""Executed writes: an approved write tool's result, recorded once per workflow + tool call.

The caller runs the lookup, the tool's handler and the `record` in one transaction, so the
row commits together with everything the handler wrote through that connection (or
neither does, on a crash): a retried activity that finds the row returns the recorded
result instead of writing again. Two attempts racing both miss the lookup, but the
primary key lets only one of them commit.
"""

from __future__ import annotations

import json
from typing import Any

from psycopg.types.json import Jsonb

from parley.storage.db import Conn


async def recorded(conn: Conn, workflow_id: str, tool_call_id: str) -> tuple[Any, bool] | None:
    """(result, is_error) of the call's recorded execution; None when none committed.

    Call it in the transaction that then runs the handler and `record`s its result.
    """
    cur = await conn.execute(
        "select result, is_error from tool_executions"
        " where workflow_id = %s and tool_call_id = %s for update",
        (workflow_id, tool_call_id),
    )
    row = await cur.fetchone()
    return None if row is None else (json.loads(row["result"]), row["is_error"])


async def record(
    conn: Conn,
    *,
    workflow_id: str,
    tool_call_id: str,
    tool_name: str,
    arguments: dict[str, Any],
    result: Any,
    is_error: bool,
    decision_hash: str | None = None,
) -> None:
    """Record the call's execution (the result as JSON; what JSON cannot hold, as text),
    with the hash of the decision that approved exactly these arguments."""
    await conn.execute(
        "insert into tool_executions (workflow_id, tool_call_id, tool_name, arguments,"
        " result, is_error, decision_hash) values (%s, %s, %s, %s, %s, %s, %s)",
        (
            workflow_id,
            tool_call_id,
            tool_name,
            Jsonb(arguments),
            json.dumps(result, default=str),
            is_error,
            decision_hash,
        ),
    )
