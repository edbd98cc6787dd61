"""Durable streaming turns against the real Temporal dev server, PostgreSQL and the real
anthropic SDK talking to a local Anthropic-format server."""

from __future__ import annotations

import asyncio
import base64
import uuid

import pytest

from parley.stack.fake_anthropic import FakeAnthropic, Reply, ToolCall
from parley.storage import context, sessions
from parley.turn.pricing import cost_usd
from parley.turn.record import CUT_SHORT_TEXT
from parley.turn.types import turn_id
from tests.conftest import Processes
from tests.helpers import (
    GatewayServer,
    WsClient,
    collapse,
    is_terminal,
    kinds,
    run_turn,
    running_gateway,
    running_worker,
    tokens,
)

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture
async def session(client: WsClient) -> dict:
    return await client.create_session(str(uuid.uuid4()))


async def history(client: WsClient, session_id: str) -> list[dict]:
    reply = await client.request(
        {"action": "get_conversation_messages", "requestId": "h", "sessionId": session_id}
    )
    return reply["data"]["messages"]


async def test_plain_streaming_turn(client: WsClient, session: dict, fake_model: FakeAnthropic):
    reply = "Returns are accepted within 17 days of delivery."
    fake_model.enqueue(Reply(text=reply, input_tokens=120, output_tokens=14))
    events = await run_turn(client, session["sessionId"], "What is the return policy?", "r1")
    assert collapse(kinds(events)) == ["immediate:202", "stream_token", "eventual_response"]
    accepted = events[0]
    assert accepted["message"] == "Processing your request..." and accepted["data"] == {}
    assert tokens(events) == reply
    assert len([e for e in events if e["type"] == "stream_token"]) > 5
    for e in events[1:-1]:
        assert e["requestId"] == "r1" and e["data"] == {"requestId": "r1", "token": e["token"]}
    final = events[-1]
    assert final["status"] == 200 and final["data"]["status"] == 200
    body = final["data"]["data"]
    assert body["response"]["responseParts"] == [reply]
    assert body["usage"] == {
        "costUsd": cost_usd("claude-haiku-4-5", 120, 14),
        "promptTokens": 120,
        "completionTokens": 14,
    }
    assert body["usage"]["costUsd"] > 0
    assert "citations" not in body
    stored = await history(client, session["sessionId"])
    assert [(m["direction"], m["content"]["text"]) for m in stored] == [
        ("outbound", reply),
        ("inbound", "What is the return policy?"),
    ]
    assert stored[0]["id"] == body["messageId"]
    request = fake_model.requests[0]
    assert request.body["model"] == "claude-haiku-4-5" and request.body["stream"] is True
    assert request.headers["authorization"] == "Bearer test-key"


async def test_per_turn_model(client: WsClient, pool, fake_model: FakeAnthropic):
    """A client may pick a model the agent allows (`parley agent ... --models`)."""
    agent_id = str(uuid.uuid4())
    async with pool.connection() as conn:
        await sessions.upsert_agent(
            conn, agent_id, name="Picky", org_id="default", models=["claude-sonnet-4-6"]
        )
    session = await client.create_session(agent_id)
    fake_model.enqueue(Reply(text="ok", input_tokens=1000, output_tokens=1000))
    events = await run_turn(client, session["sessionId"], "hi", "m1", model="claude-sonnet-4-6")
    assert fake_model.requests[0].body["model"] == "claude-sonnet-4-6"
    assert events[-1]["data"]["data"]["usage"]["costUsd"] == pytest.approx(0.018)


async def test_multi_turn_memory(client: WsClient, session: dict, fake_model: FakeAnthropic):
    fake_model.enqueue(Reply(text="Nice to meet you, Ada."), Reply(text="You are Ada."))
    await run_turn(client, session["sessionId"], "My name is Ada.", "t1")
    await run_turn(client, session["sessionId"], "What is my name?", "t2")
    second = fake_model.requests[1].body["messages"]
    # Each message as text blocks; the current one led by its grounding (and the previous
    # reply marked for the prompt cache: tests/test_prompt_caching.py).
    assert [(m["role"], [b["text"] for b in m["content"]]) for m in second] == [
        ("user", ["My name is Ada."]),
        ("assistant", ["Nice to meet you, Ada."]),
        ("user", [second[-1]["content"][0]["text"], "What is my name?"]),
    ]


async def test_tool_call_turn(
    client: WsClient, session: dict, fake_model: FakeAnthropic, pool
) -> None:
    fake_model.enqueue(
        Reply(tool_calls=[ToolCall("order_status", {"order_id": "ORD-7"})]),
        Reply(text="Your order ORD-7 has shipped with DHL."),
    )
    events = await run_turn(client, session["sessionId"], "Where is ORD-7?", "tc")
    assert collapse(kinds(events)) == [
        "immediate:202",
        "chunk:toolCall",
        "chunk:toolResult",
        "stream_token",
        "eventual_response",
    ]
    call, result = events[1], events[2]
    assert call["node"] == "order_status" and call["data"]["node"] == "order_status"
    assert call["data"]["state"]["rawResponse"]["toolCall"] == {
        "name": "order_status",
        "arguments": {"order_id": "ORD-7"},
    }
    assert result["data"]["state"]["rawResponse"]["toolResult"] == {
        "name": "order_status",
        "isError": False,
        "result": {"order_id": "ORD-7", "status": "shipped", "carrier": "DHL"},
    }
    assert tokens(events) == "Your order ORD-7 has shipped with DHL."
    # The second model call sees the tool call and its result.
    second = fake_model.requests[1].body
    assert second["messages"][-2]["content"][0]["type"] == "tool_use"
    tool_result = second["messages"][-1]["content"][0]
    assert tool_result["type"] == "tool_result"
    assert "shipped" in tool_result["content"] and tool_result["is_error"] is False
    assert {t["name"] for t in second["tools"]} >= {"order_status", "add_numbers"}
    # A model call sees only the steps of earlier iterations: a retried call must not
    # read back the tool-use step it saved itself before it failed.
    async with pool.connection() as conn:
        tid = turn_id(session["sessionId"], "tc")
        assert await context.turn_steps(conn, tid, 0) == []
        steps = await context.turn_steps(conn, tid, 1)
    assert [m["role"] for m in steps] == ["assistant", "user"]
    sent = second["messages"][-2:]
    sent[-1]["content"][-1].pop("cache_control")  # the request marks it for the prompt cache
    assert steps == sent


async def test_a_tool_loop_sends_the_models_signed_thinking_back_unchanged(
    client: WsClient, session: dict, fake_model: FakeAnthropic
) -> None:
    """Current models think by default: the thinking before a tool call must go back first
    in that assistant message, signature and all, or the API refuses the next call (the
    fake refuses as it does). The thinking is never streamed to the visitor."""
    thought = "The customer wants ORD-7's status: look it up first."
    fake_model.enqueue(
        Reply(
            thinking=thought,
            text="Let me check.",
            tool_calls=[ToolCall("order_status", {"order_id": "ORD-7"})],
        ),
        Reply(thinking="It shipped.", text="Your order ORD-7 has shipped with DHL."),
    )
    events = await run_turn(client, session["sessionId"], "Where is ORD-7?", "think")
    assert events[-1]["type"] == "eventual_response", events[-1]
    assert tokens(events) == "Let me check.\n\nYour order ORD-7 has shipped with DHL."
    assert "ORD-7's status" not in str(events)
    _, second = (r.body for r in fake_model.requests)
    assistant = second["messages"][-2]
    assert [b["type"] for b in assistant["content"]] == ["thinking", "text", "tool_use"]
    assert assistant["content"][0]["thinking"] == thought
    assert assistant["content"][0]["signature"]
    assert second["messages"][-1]["content"][0]["type"] == "tool_result"


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (ToolCall("flaky_inventory", {"sku": "S-1"}), "inventory service unreachable for S-1"),
        (ToolCall("teleport", {"to": "mars"}), "unknown tool 'teleport'"),
        (ToolCall("add_numbers", {"a": "two", "b": 2}), "invalid arguments for add_numbers"),
    ],
)
async def test_tool_errors_reach_the_model(
    client: WsClient, session: dict, fake_model: FakeAnthropic, call: ToolCall, expected: str
):
    fake_model.enqueue(Reply(tool_calls=[call]), Reply(text="Sorry, that did not work."))
    events = await run_turn(client, session["sessionId"], "Do it", "te")
    result = next(e for e in events if kinds([e]) == ["chunk:toolResult"])
    shown = result["data"]["state"]["rawResponse"]["toolResult"]
    assert shown["isError"] is True and expected in shown["result"]
    seen = fake_model.requests[1].body["messages"][-1]["content"][0]
    assert seen["is_error"] is True and expected in seen["content"]
    assert events[-1]["type"] == "eventual_response"


async def test_max_iterations(settings, fake_model: FakeAnthropic):
    limited = GatewayServer(settings.model_copy(update={"max_iterations": 3}))
    await limited.start()
    try:
        loop = Reply(tool_calls=[ToolCall("add_numbers", {"a": 1, "b": 2})])
        fake_model.enqueue(loop, loop, Reply(text="I stopped here.", tool_calls=loop.tool_calls))
        async with await WsClient.open(limited.ws_url) as c:
            s = await c.create_session()
            events = await run_turn(c, s["sessionId"], "loop forever", "mi")
        assert len(fake_model.requests) == 3
        assert [r.body.get("tool_choice") for r in fake_model.requests] == [
            None,
            None,
            {"type": "none"},
        ]
        assert kinds(events).count("chunk:toolCall") == 2
        assert events[-1]["data"]["data"]["response"]["responseParts"] == ["I stopped here."]
    finally:
        await limited.stop()


async def test_model_500_then_success(client: WsClient, session: dict, fake_model: FakeAnthropic):
    fake_model.enqueue(Reply(status=500), Reply(text="Recovered."))
    events = await run_turn(client, session["sessionId"], "hello", "r500")
    assert collapse(kinds(events)) == [
        "immediate:202",
        "chunk:reset",
        "stream_token",
        "eventual_response",
    ]
    reset = events[1]
    assert reset["node"] == "stream_reset"
    assert reset["data"]["state"] == {"rawResponse": {"reset": {"attempt": 2}}}
    assert tokens(events) == "Recovered."
    assert len(fake_model.requests) == 2


async def test_model_400_fails_the_turn(
    client: WsClient, session: dict, fake_model: FakeAnthropic, caplog: pytest.LogCaptureFixture
):
    fake_model.enqueue(Reply(status=400, error_message="max_tokens: too large"))
    events = await run_turn(client, session["sessionId"], "hello", "r400")
    assert kinds(events) == ["immediate:202", "error"]
    assert events[-1]["error"]["code"] == "AGENT_ERROR"
    message = events[-1]["error"]["message"]
    # The wire gets a reference, not the details: those are in the worker's log under it.
    assert "max_tokens" not in message
    ref = message.rsplit("ref ", 1)[1].rstrip(")")
    logged = [r.getMessage() for r in caplog.records if f"ref {ref}" in r.getMessage()]
    assert any("max_tokens: too large" in line for line in logged), logged
    assert len(fake_model.requests) == 1  # not retried
    # The slot is free again, and no reply was stored: a notice marked failed stands in its
    # place (tests/test_history.py).
    fake_model.enqueue(Reply(text="fine"))
    again = await run_turn(client, session["sessionId"], "again", "r400b")
    assert again[-1]["type"] == "eventual_response"
    texts = [m["content"]["text"] for m in await history(client, session["sessionId"])]
    assert texts == ["fine", "again", CUT_SHORT_TEXT["failed"], "hello"]


async def test_repeated_request_id_attaches(
    client: WsClient, session: dict, fake_model: FakeAnthropic
):
    fake_model.enqueue(Reply(text="Only once."))
    first = await run_turn(client, session["sessionId"], "hi", "dup")
    second = await run_turn(client, session["sessionId"], "hi", "dup")
    assert tokens(second) == tokens(first) == "Only once."
    assert second[-1]["data"]["data"]["messageId"] == first[-1]["data"]["data"]["messageId"]
    assert len(fake_model.requests) == 1
    assert len(await history(client, session["sessionId"])) == 2


async def test_turn_in_progress_from_another_connection(
    gateway: GatewayServer, client: WsClient, session: dict, fake_model: FakeAnthropic
):
    fake_model.enqueue(Reply(text="slow and steady wins", pause_after=2))
    await client.send(
        {
            "action": "send_message",
            "requestId": "a",
            "sessionId": session["sessionId"],
            "message": "x",
        }
    )
    await fake_model.await_paused()
    async with await WsClient.open(gateway.ws_url) as other:
        refused = await other.request(
            {
                "action": "send_message",
                "requestId": "b",
                "sessionId": session["sessionId"],
                "message": "y",
            }
        )
    assert refused["type"] == "error" and refused["requestId"] == "b"
    assert refused["error"]["code"] == "TURN_IN_PROGRESS"
    fake_model.release()
    events = await client.recv_until(is_terminal("a"))
    assert tokens(events) == "slow and steady wins"


async def test_cancel_mid_stream(client: WsClient, session: dict, fake_model: FakeAnthropic):
    fake_model.enqueue(Reply(text="this answer will never be finished", pause_after=3))
    await client.send(
        {
            "action": "send_message",
            "requestId": "c",
            "sessionId": session["sessionId"],
            "message": "go",
        }
    )
    await fake_model.await_paused()
    await client.send({"action": "cancel", "requestId": "c", "sessionId": session["sessionId"]})
    events = await client.recv_until(is_terminal("c"))
    assert events[-1] == {
        "type": "cancelled",
        "requestId": "c",
        "status": 499,
        "data": {"requestId": "c", "status": 499},
        "timestamp": events[-1]["timestamp"],
    }
    assert events[0]["status"] == 202
    # The model stream is closed (heartbeat delivers the cancel), the slot is free, and
    # nothing more from the cancelled turn reaches the socket.
    await fake_model.await_disconnected(timeout=10)
    fake_model.enqueue(Reply(text="next"))
    after = await run_turn(client, session["sessionId"], "next one", "c2")
    assert all(e.get("requestId") == "c2" for e in after), after
    texts = [m["content"]["text"] for m in await history(client, session["sessionId"])]
    # No partial reply stored: a notice marked cancelled stands in its place.
    assert texts == ["next", "next one", CUT_SHORT_TEXT["cancelled"], "go"]
    # A cancel with nothing to cancel gets no reply at all.
    await client.send({"action": "cancel", "requestId": "c2", "sessionId": session["sessionId"]})
    assert (await client.request({"action": "ping", "requestId": "after"}))["type"] == "pong"


async def test_resume_turn_from_another_connection(
    gateway: GatewayServer, session: dict, fake_model: FakeAnthropic
):
    reply = "one two three four five six"
    fake_model.enqueue(Reply(text=reply, pause_after=3))
    first = await WsClient.open(gateway.ws_url)
    await first.send(
        {
            "action": "send_message",
            "requestId": "rs",
            "sessionId": session["sessionId"],
            "message": "count",
        }
    )
    await fake_model.await_paused()
    await first.close()  # a dropped socket does not stop the turn
    async with await WsClient.open(gateway.ws_url) as second:
        await second.send(
            {"action": "resume_turn", "requestId": "rs", "sessionId": session["sessionId"]}
        )
        early = await second.recv()
        assert early["type"] == "stream_token" and early["requestId"] == "rs"
        fake_model.release()
        events = [early, *await second.recv_until(is_terminal("rs"))]
        assert tokens(events) == reply
        assert events[-1]["type"] == "eventual_response"
        missing = await second.request(
            {"action": "resume_turn", "requestId": "x", "sessionId": session["sessionId"]}
        )
        assert missing["error"]["code"] == "NO_ACTIVE_TURN"


async def test_resume_turn_on_a_socket_that_already_follows_the_turn_repeats_nothing(
    client: WsClient, session: dict, fake_model: FakeAnthropic
):
    """A client that asks to resume the turn its socket already relays (twice, even) gets
    each event once: nothing is replayed over what it already has."""
    reply = "one two three four five six"
    fake_model.enqueue(Reply(text=reply, pause_after=3))
    await client.send(
        {
            "action": "send_message",
            "requestId": "rr",
            "sessionId": session["sessionId"],
            "message": "go",
        }
    )
    await fake_model.await_paused()
    first = await client.recv_until(lambda e: e["type"] == "stream_token")
    for _ in range(2):
        await client.send(
            {"action": "resume_turn", "requestId": "rr", "sessionId": session["sessionId"]}
        )
    fake_model.release()
    events = [*first, *await client.recv_until(is_terminal("rr"))]
    assert tokens(events) == reply
    assert [e["type"] for e in events].count("eventual_response") == 1


async def test_stream_false_sends_only_the_final_event(
    client: WsClient, session: dict, fake_model: FakeAnthropic
):
    fake_model.enqueue(
        Reply(tool_calls=[ToolCall("order_status", {"order_id": "1"})]), Reply(text="Shipped.")
    )
    events = await run_turn(client, session["sessionId"], "status?", "sf", stream=False)
    assert kinds(events) == ["immediate:202", "eventual_response"]
    assert events[-1]["data"]["data"]["response"]["responseParts"] == ["Shipped."]


@pytest.mark.parametrize(
    ("frame", "code", "text"),
    [
        ({"sessionId": "S", "message": "hi"}, "VALIDATION_ERROR", "requestId"),
        ({"requestId": "v", "message": "hi"}, "VALIDATION_ERROR", "sessionId"),
        ({"requestId": "v", "sessionId": "S"}, "VALIDATION_ERROR", "message"),
        ({"requestId": "v", "sessionId": "S", "message": "  "}, "VALIDATION_ERROR", "message"),
        (
            {"requestId": "v", "sessionId": "S", "message": "x" * 10_001},
            "VALIDATION_ERROR",
            "10000",
        ),
        (
            {"requestId": "v", "sessionId": "S", "message": "hi", "stream": "no"},
            "VALIDATION_ERROR",
            "stream",
        ),
        (
            {"requestId": "v", "sessionId": str(uuid.uuid4()), "message": "hi"},
            "SESSION_NOT_FOUND",
            "",
        ),
    ],
)
async def test_send_message_validation(
    client: WsClient, session: dict, fake_model: FakeAnthropic, frame: dict, code: str, text: str
):
    frame = {k: session["sessionId"] if v == "S" else v for k, v in frame.items()}
    event = await client.request({"action": "send_message", **frame})
    assert event["type"] == "error" and event["error"]["code"] == code
    assert text in event["error"]["message"]
    assert fake_model.requests == []
    assert (await client.request({"action": "ping"}))["type"] == "pong"


async def test_no_model_key(settings):
    keyless = GatewayServer(settings.model_copy(update={"anthropic_api_key": None}))
    await keyless.start()
    try:
        async with await WsClient.open(keyless.ws_url) as c:
            s = await c.create_session()
            event = await c.request(
                {
                    "action": "send_message",
                    "requestId": "k",
                    "sessionId": s["sessionId"],
                    "message": "hi",
                }
            )
        assert event["type"] == "error" and event["error"]["code"] == "LLM_UNAVAILABLE"
    finally:
        await keyless.stop()


async def _history_payload_bytes(gateway: GatewayServer, turn: str) -> int:
    """Bytes of every payload the turn's history holds: workflow input, activity inputs and
    results, signals. (Event counts vary with timing; the payloads are what could carry
    conversation content.)"""
    handle = gateway.services.temporal.get_workflow_handle(turn)
    history = await handle.fetch_history()
    total = 0
    for event in history.events:
        for attrs, field in (
            (event.workflow_execution_started_event_attributes, "input"),
            (event.activity_task_scheduled_event_attributes, "input"),
            (event.activity_task_completed_event_attributes, "result"),
            (event.workflow_execution_signaled_event_attributes, "input"),
            (event.workflow_execution_completed_event_attributes, "result"),
        ):
            total += sum(p.ByteSize() for p in getattr(attrs, field).payloads)
    return total


async def test_history_does_not_grow_with_the_conversation(
    gateway: GatewayServer, client: WsClient, fake_model: FakeAnthropic, pool
):
    from tests.test_session_protocol import _seed_messages

    sizes = {}
    for count in (2, 200):
        s = await client.create_session(str(uuid.uuid4()))
        await _seed_messages(pool, s["conversationId"], count)
        async with pool.connection() as conn:  # make each seeded message long
            await conn.execute(
                "update messages set text = repeat('lorem ipsum ', 100) where conversation_id = %s",
                (s["conversationId"],),
            )
        fake_model.enqueue(Reply(text="Same reply."))
        events = await run_turn(client, s["sessionId"], "Same question?", "hist", stream=False)
        assert events[-1]["type"] == "eventual_response"
        sizes[count] = await _history_payload_bytes(gateway, turn_id(s["sessionId"], "hist"))
        sent = fake_model.requests[-1].body["messages"]
        assert len(sent) >= min(count, 2)
    assert len(fake_model.requests[-1].body["messages"]) > 100  # the context was really long
    # 200 long messages are ~240 kB of context: none of it may reach the history. (A few
    # bytes may differ: the usage counts the model reports have more digits.)
    assert sizes[200] <= sizes[2] + 16, sizes


async def test_official_client_streams_a_turn(gateway: GatewayServer, fake_model: FakeAnthropic):
    from smooth_operator import SmoothAgentClient

    fake_model.enqueue(Reply(text="Hello from Parley."))
    client = SmoothAgentClient(url=gateway.ws_url, turn_timeout=30)
    await client.connect()
    try:
        s = await client.create_conversation_session(agent_id=str(uuid.uuid4()))
        turn = client.send_message(session_id=str(s.session_id), message="hi")
        streamed = [e.token async for e in turn if e.type == "stream_token"]
        final = await turn
        assert "".join(streamed) == "Hello from Parley."
        assert final.data.data.response["responseParts"] == ["Hello from Parley."]
    finally:
        await client.disconnect()


async def test_worker_without_a_model_key(isolated_settings, fake_model: FakeAnthropic):
    """A gateway that has a key in front of a worker that has none: the turn ends with
    LLM_UNAVAILABLE, not a retry loop."""
    keyless = isolated_settings.model_copy(update={"anthropic_api_key": None})
    async with (
        running_worker(keyless),
        running_gateway(isolated_settings) as gateway,
        await WsClient.open(gateway.ws_url) as c,
    ):
        s = await c.create_session()
        events = await run_turn(c, s["sessionId"], "hello?", "nokey")
        # The turn ended before any model call: finish_turn stored the user message, and
        # the failed turn's notice after it.
        stored = await history(c, s["sessionId"])
    assert kinds(events) == ["immediate:202", "error"]
    assert events[-1]["error"]["code"] == "LLM_UNAVAILABLE"
    assert fake_model.requests == []
    assert [(m["direction"], m["content"]["text"]) for m in stored] == [
        ("outbound", CUT_SHORT_TEXT["failed"]),
        ("inbound", "hello?"),
    ]


async def test_workflow_ids_do_not_carry_the_session_id(
    client: WsClient, session: dict, fake_model: FakeAnthropic, gateway: GatewayServer
):
    """A session id is a capability: the turn's workflow id (in Temporal's UI, its history
    and every log line that names the turn) must not contain it."""
    fake_model.enqueue(Reply(text="ok"))
    await run_turn(client, session["sessionId"], "hi", "opaque")
    tid = turn_id(session["sessionId"], "opaque")
    assert session["sessionId"] not in tid and "opaque" not in tid
    description = await gateway.services.temporal.get_workflow_handle(tid).describe()
    assert description.id == tid
    history = await gateway.services.temporal.get_workflow_handle(tid).fetch_history()
    assert history.workflow_id == tid
    assert turn_id(session["sessionId"], "opaque") == tid  # the same on every gateway
    # Nor does anything the history holds (inputs, results, signals): Temporal's UI is
    # read by operators, and without PARLEY_PAYLOAD_KEYS its payloads are plain JSON.
    assert session["sessionId"] not in str(payloads_of(history.to_json_dict()))


def payloads_of(node: object) -> list[bytes]:
    """Every payload's data in a history (JSON form: base64)."""
    if isinstance(node, dict):
        found = [base64.b64decode(node["data"])] if isinstance(node.get("data"), str) else []
        return found + [p for value in node.values() for p in payloads_of(value)]
    if isinstance(node, list):
        return [p for value in node for p in payloads_of(value)]
    return []


async def test_a_requestid_reused_for_another_message_is_refused_not_dropped(
    client: WsClient, session: dict, fake_model: FakeAnthropic
) -> None:
    """A retry of the same send re-attaches to its turn; another message under a used
    requestId would otherwise be answered with the old turn's reply and never stored."""
    fake_model.enqueue(Reply(text="First answer."))
    first = await run_turn(client, session["sessionId"], "first message", "same")
    assert tokens(first) == "First answer."
    retried = await run_turn(client, session["sessionId"], "first message", "same")
    assert retried[-1]["type"] == "eventual_response"
    assert retried[-1]["data"]["data"]["messageId"] == first[-1]["data"]["data"]["messageId"]
    other = await client.request(
        {
            "action": "send_message",
            "requestId": "same",
            "sessionId": session["sessionId"],
            "message": "second message",
        }
    )
    assert other["type"] == "error" and other["requestId"] == "same", other
    assert other["error"]["code"] == "VALIDATION_ERROR"
    assert "already used for another message" in other["error"]["message"]
    assert len(fake_model.requests) == 1  # nothing new started
    texts = [m["content"]["text"] for m in await history(client, session["sessionId"])]
    assert sorted(texts) == ["First answer.", "first message"]  # and no "second message"


async def test_a_gateway_relaying_a_turn_stops_at_once_and_another_finishes_the_stream(
    isolated_settings, processes: Processes, fake_model: FakeAnthropic
) -> None:
    """A deploy stops a gateway while its sockets follow a turn: it exits cleanly (its
    long-poll reads are cancelled, not retried until it is killed), and the turn goes on
    for a client that resumes it on another gateway."""
    processes.worker(isolated_settings)
    first, port = await processes.gateway(isolated_settings)
    _, other_port = await processes.gateway(isolated_settings)
    reply = "one two three four five six"
    fake_model.enqueue(Reply(text=reply, pause_after=2))
    async with await WsClient.open(f"ws://127.0.0.1:{port}/ws") as client:
        session = await client.create_session(str(uuid.uuid4()))
        await client.send(
            {
                "action": "send_message",
                "requestId": "d",
                "sessionId": session["sessionId"],
                "message": "go",
            }
        )
        await fake_model.await_paused()
        await client.recv_until(lambda e: e["type"] == "stream_token")
        assert await asyncio.to_thread(first.stop) == 0  # SIGTERM; not killed after 10 s
    fake_model.release()
    async with await WsClient.open(f"ws://127.0.0.1:{other_port}/ws") as again:
        await again.send(
            {"action": "resume_turn", "requestId": "d", "sessionId": session["sessionId"]}
        )
        events = await again.recv_until(is_terminal("d"), timeout=60)
    assert tokens(events) == reply and events[-1]["type"] == "eventual_response"
