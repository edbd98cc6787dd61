"""A parked approval survives what would lose it elsewhere: another gateway, a dead
gateway, a worker killed mid-write, and a restart of the Temporal server itself."""

from __future__ import annotations

import asyncio
import signal
import uuid
from pathlib import Path

import pytest

from parley.settings import Settings
from parley.stack.embedded import free_port, start_temporal
from parley.stack.fake_anthropic import FakeAnthropic, Reply, ToolCall
from tests.conftest import Processes
from tests.helpers import (
    GatewayServer,
    WsClient,
    collapse,
    is_terminal,
    kinds,
    running_gateway,
    running_worker,
    tokens,
)
from tests.tools_for_tests import BLOCKING_REFUND_LOCK

REFUND = ToolCall("issue_refund", {"order_id": "ORD-DUR"})
RESUMED = ["immediate:200", "chunk:toolResult", "stream_token", "eventual_response"]


def send(session_id: str, request_id: str) -> dict:
    return {
        "action": "send_message",
        "requestId": request_id,
        "sessionId": session_id,
        "message": "Refund my order, please.",
    }


def confirm(session_id: str, approved: bool = True) -> dict:
    return {
        "action": "confirm_tool_action",
        "requestId": "ok",
        "sessionId": session_id,
        "approved": approved,
    }


async def park(client: WsClient, request_id: str) -> str:
    """Open a session, start a turn that parks on a write; returns the session id."""
    session = await client.create_session(str(uuid.uuid4()))
    await client.send(send(session["sessionId"], request_id))
    parked = await client.recv_until(lambda e: e["type"] == "stream_chunk")
    assert kinds(parked) == ["immediate:202", "write_confirmation_required", "chunk:toolCall"]
    return session["sessionId"]


async def count(pool, sql: str, *args: object) -> int:
    async with pool.connection() as conn:
        return (await (await conn.execute(sql, args)).fetchone())["n"]


@pytest.mark.usefixtures("worker")
async def test_turn_starts_on_gateway_a_and_is_confirmed_on_gateway_b(
    settings: Settings, processes: Processes, fake_model: FakeAnthropic
):
    fake_model.enqueue(Reply(tool_calls=[REFUND]), Reply(text="Refunded via B."))
    (_, port_a), (_, port_b) = await asyncio.gather(
        processes.gateway(settings), processes.gateway(settings)
    )
    async with await WsClient.open(f"ws://127.0.0.1:{port_a}/ws") as on_a:
        session_id = await park(on_a, "ab")
        async with await WsClient.open(f"ws://127.0.0.1:{port_b}/ws") as on_b:
            await on_b.send(confirm(session_id))
            events = await on_b.recv_until(is_terminal("ab"))
    assert collapse(kinds(events)) == RESUMED
    assert tokens(events) == "Refunded via B."


@pytest.mark.usefixtures("worker")
async def test_gateway_killed_while_parked(
    settings: Settings, processes: Processes, fake_model: FakeAnthropic
):
    fake_model.enqueue(Reply(tool_calls=[REFUND]), Reply(text="Still here."))
    doomed, port = await processes.gateway(settings)
    client = await WsClient.open(f"ws://127.0.0.1:{port}/ws")
    session_id = await park(client, "gk")
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(10)
    _, new_port = await processes.gateway(settings)
    async with await WsClient.open(f"ws://127.0.0.1:{new_port}/ws") as fresh:
        await fresh.send(confirm(session_id))
        events = await fresh.recv_until(is_terminal("gk"))
    assert collapse(kinds(events)) == RESUMED
    assert tokens(events) == "Still here."


@pytest.mark.timeout(120)
async def test_worker_killed_during_the_approved_write(
    isolated_settings: Settings, processes: Processes, fake_model: FakeAnthropic, pool
):
    """The refund commits with its execution record, so a kill mid-way leaves nothing and
    the retry refunds exactly once."""
    settings = isolated_settings
    order = f"ORD-{uuid.uuid4().hex[:6]}"
    fake_model.enqueue(
        Reply(tool_calls=[ToolCall("blocking_refund", {"order_id": order})]),
        Reply(text="Refunded exactly once."),
    )
    gateway = GatewayServer(settings)
    await gateway.start()
    first = processes.worker(settings)
    async with pool.connection() as gate:
        await gate.execute("select pg_advisory_lock(%s)", (BLOCKING_REFUND_LOCK,))
        try:
            async with await WsClient.open(gateway.ws_url) as client:
                session_id = await park(client, "wk")
                assert (await client.request(confirm(session_id)))["status"] == 200
                await _wait_for_lock_waiters(pool, 1)  # the refund is half done, uncommitted
                first.send_signal(signal.SIGKILL)
                first.wait(10)
                processes.worker(settings)
                await _wait_for_lock_waiters(pool, 2)  # the retry reached the same point
                await gate.execute("select pg_advisory_unlock(%s)", (BLOCKING_REFUND_LOCK,))
                events = await client.recv_until(is_terminal("wk"), timeout=60)
        finally:
            await gate.execute("select pg_advisory_unlock_all()")
            await gateway.stop()
    assert tokens(events) == "Refunded exactly once."
    result = next(e for e in events if kinds([e]) == ["chunk:toolResult"])
    assert result["data"]["state"]["rawResponse"]["toolResult"]["isError"] is False
    refunds = "select count(*) as n from demo_refunds where order_id = %s"
    assert await count(pool, refunds, order) == 1
    executions = "select count(*) as n from tool_executions where arguments->>'order_id' = %s"
    assert await count(pool, executions, order) == 1


async def _wait_for_lock_waiters(pool, n: int) -> None:
    """Until `n` sessions wait on the blocking refund's advisory lock."""
    sql = (
        "select count(*) as n from pg_locks where locktype = 'advisory' and not granted"
        " and objid = %s"
    )
    async with asyncio.timeout(45):
        while await count(pool, sql, BLOCKING_REFUND_LOCK) < n:
            await asyncio.sleep(0.1)


@pytest.mark.timeout(180)
async def test_temporal_restarted_while_parked(
    settings: Settings, fake_model: FakeAnthropic, tmp_path: Path
):
    """The dev server's SQLite file keeps the parked turn across a server restart."""
    port = free_port()
    temporal = await start_temporal(tmp_path, port=port, ui_port=free_port())
    own = settings.model_copy(
        update={"temporal_address": temporal.address, "task_queue": f"tr-{uuid.uuid4().hex[:6]}"}
    )
    try:
        async with running_worker(own), running_gateway(own) as gateway:
            fake_model.enqueue(Reply(tool_calls=[REFUND]), Reply(text="Survived a restart."))
            async with await WsClient.open(gateway.ws_url) as client:
                session_id = await park(client, "tr")
            temporal.stop()
            temporal = await start_temporal(tmp_path, port=port, ui_port=free_port())
            async with await WsClient.open(gateway.ws_url) as client:
                await client.send(confirm(session_id))
                events = await client.recv_until(is_terminal("tr"), timeout=90)
        assert collapse(kinds(events)) == RESUMED
        assert tokens(events) == "Survived a restart."
    finally:
        temporal.stop()
