"""Resume is exact with the live lane: a client that drops at any point of a turn and sends
`resume_turn` gets exactly the events a client that never dropped got, on the same gateway
(its feed, from memory) or another one (a fresh feed: the durable record merged with the
live lane), across a retried model call too; and a turn that has just ended still replays.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

import pytest

from parley.stack.fake_anthropic import FakeAnthropic, Reply, ToolCall
from tests.helpers import (
    Event,
    GatewayServer,
    WsClient,
    is_terminal,
    run_turn,
    running_gateway,
    tokens,
)

pytestmark = pytest.mark.usefixtures("worker")

REPLY = " ".join(f"word{i}" for i in range(60))  # 60 words, ~90 deltas of 4 characters


def wire(events: list[Event]) -> list[dict[str, Any]]:
    """Events as a client compares them: everything but the send time."""
    return [{k: v for k, v in e.items() if k != "timestamp"} for e in events]


async def watch(url: str, session_id: str, request_id: str) -> list[Event]:
    """Attach with resume_turn and read to the terminal event."""
    async with await WsClient.open(url) as client:
        await client.send(
            {"action": "resume_turn", "requestId": request_id, "sessionId": session_id}
        )
        return await client.recv_until(is_terminal(request_id), timeout=60)


async def drop_and_resume(
    urls: tuple[str, str], session_id: str, request_id: str, k: int, rng: random.Random
) -> tuple[list[Event], list[Event]]:
    """Read `k` events on one gateway, drop the connection (no close handshake, as when a
    network drops), resume on a random gateway."""
    before: list[Event] = []
    client = await WsClient.open(rng.choice(urls))
    await client.send({"action": "resume_turn", "requestId": request_id, "sessionId": session_id})
    while len(before) < k:
        before.append(await client.recv(timeout=60))
        if is_terminal(request_id)(before[-1]):
            break
    client.ws.transport.abort()
    return before, await watch(rng.choice(urls), session_id, request_id)


@pytest.mark.timeout(240)
async def test_resume_is_exact_wherever_the_client_drops(
    gateway: GatewayServer, settings, fake_model: FakeAnthropic
) -> None:
    rng = random.Random(20261128)
    trials = 0
    async with running_gateway(settings) as other:
        urls = (gateway.ws_url, other.ws_url)
        for turn in range(5):
            retried = turn == 2  # this turn's model call fails mid-stream and is retried
            if turn == 4:  # a tool call between two model calls: the second call's items
                # must wait for the workflow's tool chunks, which only the record carries
                call = ToolCall("order_status", {"order_id": "A1"})
                fake_model.enqueue(Reply(text="Checking. ", tool_calls=[call], delay=0.004))
            if retried:
                fake_model.enqueue(
                    Reply(text=REPLY, delay=0.004, error_after=30, error_type="overloaded_error")
                )
            fake_model.enqueue(Reply(text=REPLY, delay=0.004))
            async with await WsClient.open(rng.choice(urls)) as sender:
                session = await sender.create_session(str(uuid.uuid4()))
                session_id, request_id = session["sessionId"], f"t{turn}"
                await sender.send(
                    {
                        "action": "send_message",
                        "requestId": request_id,
                        "sessionId": session_id,
                        "message": "Say sixty words.",
                    }
                )
                accepted = await sender.recv(timeout=30)
                assert accepted["status"] == 202
                drops = [
                    drop_and_resume(urls, session_id, request_id, rng.randint(0, 110), rng)
                    for _ in range(21)
                ]
                reference, *results = await asyncio.gather(
                    sender.recv_until(is_terminal(request_id), timeout=60), *drops
                )
            assert tokens(reference).endswith(REPLY)
            if retried:
                assert any(e["type"] == "stream_chunk" for e in reference), "no stream_reset"
            for before, resumed in results:
                trials += 1
                assert wire(resumed) == wire(reference)
                assert wire(before) == wire(reference)[: len(before)]
    assert trials >= 100


async def test_a_turn_that_just_ended_replays_whole(
    gateway: GatewayServer, settings, fake_model: FakeAnthropic
) -> None:
    fake_model.enqueue(Reply(text="All done, thanks for waiting."))
    async with await WsClient.open(gateway.ws_url) as client:
        session = await client.create_session(str(uuid.uuid4()))
        session_id = session["sessionId"]
        await client.send(
            {
                "action": "send_message",
                "requestId": "end",
                "sessionId": session_id,
                "message": "Finish.",
            }
        )
        events = (await client.recv_until(is_terminal("end")))[1:]  # after the 202
    assert events[-1]["type"] == "eventual_response"
    async with running_gateway(settings) as other:
        # The same gateway (its feed, in memory) and a gateway that never saw the turn.
        for url in (gateway.ws_url, other.ws_url):
            assert wire(await watch(url, session_id, "end")) == wire(events)
    async with await WsClient.open(gateway.ws_url) as client:
        missing = await client.request(
            {"action": "resume_turn", "requestId": "other", "sessionId": session_id}
        )
    assert missing["error"]["code"] == "NO_ACTIVE_TURN"


async def test_past_its_update_budget_a_gateway_reads_by_query(
    settings, fake_model: FakeAnthropic, temporal_env
) -> None:
    """A turn longer than a gateway's update budget still finishes for its viewer: the feed
    reads the record by query, and the run's updates stop growing."""
    from temporalio.api.enums.v1 import EventType

    from parley.turn.types import turn_id

    # The record alone (no live lane on this gateway) and a budget of two long-polls.
    budget = settings.model_copy(update={"live_lane": False, "relay_update_budget": 2})
    fake_model.enqueue(Reply(text=REPLY, delay=0.01))  # ~1 s: several 500 ms batches
    async with running_gateway(budget) as server, await WsClient.open(server.ws_url) as client:
        session = await client.create_session(str(uuid.uuid4()))
        events = await run_turn(client, session["sessionId"], "Long one.", "long")
    assert tokens(events) == REPLY and events[-1]["type"] == "eventual_response"
    handle = temporal_env.client.get_workflow_handle(turn_id(session["sessionId"], "long"))
    history = await handle.fetch_history()
    updates = [
        e
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
    ]
    signals = [
        e
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
    ]
    assert len(signals) >= 2  # the reply took several batches...
    assert len(updates) <= 2  # ...but this gateway long-polled only twice
