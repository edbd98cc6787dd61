"""A parked interaction survives what would lose it elsewhere: it is answered on another
gateway process, and after the worker and the gateway it parked on were killed."""

from __future__ import annotations

import asyncio
import signal

import pytest

from parley.settings import Settings
from parley.stack.fake_anthropic import FakeAnthropic, Reply
from tests.conftest import Processes
from tests.helpers import WsClient, collapse, is_terminal, kinds, tokens
from tests.test_interactions import (
    ASK_CONTACT,
    ASK_PLAN,
    RESUMED,
    ask,
    new_session,
    rows,
    submit,
    tool_result,
)


@pytest.mark.usefixtures("worker")
async def test_parked_on_gateway_a_answered_on_gateway_b(
    settings: Settings, processes: Processes, fake_model: FakeAnthropic, pool
):
    fake_model.enqueue(Reply(tool_calls=[ASK_PLAN]), Reply(text="Pro, via B."))
    (_, port_a), (_, port_b) = await asyncio.gather(
        processes.gateway(settings), processes.gateway(settings)
    )
    async with await WsClient.open(f"ws://127.0.0.1:{port_a}/ws") as on_a:
        session_id = await new_session(on_a)
        asked = await ask(on_a, session_id, "ab")
        async with await WsClient.open(f"ws://127.0.0.1:{port_b}/ws") as on_b:
            invalid = await on_b.request(submit(session_id, asked, values={"answers": []}))
            assert invalid["type"] == "interaction_invalid" and invalid["requestId"] == "ab"
            answer = {
                "answers": [
                    {"header": "Plan", "options": ["Pro"]},
                    {"header": "Add-ons", "options": ["Backup", "Support"]},
                ]
            }
            await on_b.send(submit(session_id, asked, values=answer))
            events = await on_b.recv_until(is_terminal("ab"))
        rest = await on_a.recv_until(is_terminal("ab"))  # the asking socket sees it too
    assert collapse(kinds(events)) == RESUMED and tokens(events) == "Pro, via B."
    assert tool_result(events)["result"] == {"status": "submitted", "values": answer}
    assert tokens(rest) == "Pro, via B."
    [row] = await rows(pool, session_id)
    assert row["status"] == "submitted" and row["invalid_submits"] == 1


@pytest.mark.timeout(120)
async def test_worker_and_gateway_killed_while_parked(
    isolated_settings: Settings, processes: Processes, fake_model: FakeAnthropic, pool
):
    """Nothing of the question lives in a process: with the worker and the gateway it was
    asked on both killed, a new pair takes the answer and finishes the turn."""
    settings = isolated_settings
    fake_model.enqueue(Reply(tool_calls=[ASK_CONTACT]), Reply(text="Survived two kills."))
    worker = processes.worker(settings)
    doomed, port = await processes.gateway(settings)
    client = await WsClient.open(f"ws://127.0.0.1:{port}/ws")
    session_id = await new_session(client)
    asked = await ask(client, session_id, "wk")
    for process in (worker, doomed):
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    client.ws.transport.abort()
    processes.worker(settings)
    _, new_port = await processes.gateway(settings)
    async with await WsClient.open(f"ws://127.0.0.1:{new_port}/ws") as fresh:
        await fresh.send(submit(session_id, asked, values={"email": "ada@example.com"}))
        events = await fresh.recv_until(is_terminal("wk"), timeout=60)
    assert collapse(kinds(events)) == RESUMED
    assert tokens(events) == "Survived two kills."
    assert tool_result(events)["result"]["values"] == {"email": "ada@example.com"}
    [row] = await rows(pool, session_id)
    assert row["status"] == "submitted" and row["delivered"]
