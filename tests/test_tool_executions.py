"""The executed-writes record, on its own: what a retried write tool finds, and what it
finds after the attempt's transaction rolled back (nothing)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import date

import pytest
from psycopg.rows import dict_row

from parley.storage import db, tool_executions
from parley.storage.db import Conn


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[Conn]:
    await db.migrate(database_url)
    async with await Conn.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


async def record(conn: Conn, workflow_id: str, result: object) -> None:
    await tool_executions.record(
        conn,
        workflow_id=workflow_id,
        tool_call_id="call-1",
        tool_name="issue_refund",
        arguments={"order_id": "ORD-1"},
        result=result,
        is_error=False,
    )


async def test_a_recorded_execution_is_found_with_its_result(conn: Conn) -> None:
    wf = f"turn-{uuid.uuid4()}"
    assert await tool_executions.recorded(conn, wf, "call-1") is None
    async with conn.transaction():
        await record(conn, wf, {"refund_id": 7, "on": date(2024, 5, 1)})
    # JSON keeps the result's shape; what JSON cannot hold comes back as text
    found = await tool_executions.recorded(conn, wf, "call-1")
    assert found == ({"refund_id": 7, "on": "2024-05-01"}, False)
    assert await tool_executions.recorded(conn, wf, "call-2") is None


async def test_an_execution_rolled_back_with_its_transaction_is_not_found(
    conn: Conn,
) -> None:
    wf = f"turn-{uuid.uuid4()}"

    class Crash(Exception):
        pass

    with pytest.raises(Crash):
        async with conn.transaction():
            await record(conn, wf, "refunded")
            raise Crash
    assert await tool_executions.recorded(conn, wf, "call-1") is None
