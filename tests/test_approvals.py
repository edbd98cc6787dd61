"""Human in the loop: write tools park the turn until confirm_tool_action, in one process."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest

from parley.stack.fake_anthropic import FakeAnthropic, Reply, ToolCall
from tests.helpers import GatewayServer, WsClient, collapse, is_terminal, kinds, tokens

pytestmark = pytest.mark.usefixtures("worker")

REFUND = ToolCall("issue_refund", {"order_id": "ORD-1234", "reason": "damaged"})


@pytest.fixture
async def session(client: WsClient) -> dict:
    return await client.create_session(str(uuid.uuid4()))


def send(session: dict, request_id: str, message: str = "Please refund ORD-1234") -> dict:
    return {
        "action": "send_message",
        "requestId": request_id,
        "sessionId": session["sessionId"],
        "message": message,
    }


def confirm(session: dict, approved: object, request_id: str = "conf") -> dict:
    return {
        "action": "confirm_tool_action",
        "requestId": request_id,
        "sessionId": session["sessionId"],
        "approved": approved,
    }


async def park(client: WsClient, session: dict, request_id: str, *calls: ToolCall) -> list:
    """Send a message whose model reply calls `calls`; return events up to the park."""
    await client.send(send(session, request_id))
    return await client.recv_until(lambda e: e["type"] == "stream_chunk")


async def refunds(pool, order_id: str = "ORD-1234") -> int:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "select count(*) as n from demo_refunds where order_id = %s", (order_id,)
        )
        return (await cur.fetchone())["n"]


async def approval_rows(pool, session: dict) -> list[dict]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "select tool_name, arguments, description, decision, decided_by, decided_at,"
            " delivered_at, deadline > created_at as has_deadline from approvals"
            " where session_id = %s order by created_at",
            (session["sessionId"],),
        )
        return await cur.fetchall()


async def test_approve_flow(client: WsClient, session: dict, fake_model: FakeAnthropic, pool):
    fake_model.enqueue(Reply(tool_calls=[REFUND]), Reply(text="Your refund is on its way."))
    before = await refunds(pool)
    parked = await park(client, session, "ap")
    assert kinds(parked) == ["immediate:202", "write_confirmation_required", "chunk:toolCall"]
    ask = parked[1]
    assert ask["requestId"] == "ap"
    assert ask["data"] == {
        "requestId": "ap",
        "data": {
            "toolId": "issue_refund",
            "actionDescription": "Issue a refund for order ORD-1234 (damaged)",
        },
    }
    assert parked[2]["data"]["state"]["rawResponse"]["toolCall"]["arguments"] == REFUND.input
    assert await refunds(pool) == before  # nothing runs before the approval
    await client.send(confirm(session, True))
    events = await client.recv_until(is_terminal("ap"))
    assert collapse(kinds(events)) == [
        "immediate:200",
        "chunk:toolResult",
        "stream_token",
        "eventual_response",
    ]
    ack = events[0]
    assert ack["requestId"] == "conf" and ack["message"] == "Tool action approved"
    assert ack["data"] == {"sessionId": session["sessionId"], "approved": True}
    result = events[1]["data"]["state"]["rawResponse"]["toolResult"]
    assert result["isError"] is False and result["result"]["status"] == "refunded"
    assert events[1]["requestId"] == "ap"
    assert tokens(events) == "Your refund is on its way."
    assert await refunds(pool) == before + 1
    [row] = await approval_rows(pool, session)
    assert row["decision"] == "approved" and row["decided_by"].startswith("connection ")
    assert row["tool_name"] == "issue_refund" and row["arguments"] == REFUND.input
    assert row["decided_at"] is not None and row["delivered_at"] is not None
    assert row["has_deadline"]


async def test_deny_flow(client: WsClient, session: dict, fake_model: FakeAnthropic, pool):
    fake_model.enqueue(Reply(tool_calls=[REFUND]), Reply(text="Okay, I will not refund it."))
    before = await refunds(pool)
    await park(client, session, "dn")
    await client.send(confirm(session, False))
    events = await client.recv_until(is_terminal("dn"))
    assert collapse(kinds(events)) == [
        "immediate:200",
        "chunk:toolResult",
        "stream_token",
        "eventual_response",
    ]
    assert events[0]["message"] == "Tool action rejected"
    assert events[0]["data"]["approved"] is False
    result = events[1]["data"]["state"]["rawResponse"]["toolResult"]
    assert result["isError"] is True and "declined" in result["result"]
    told = fake_model.requests[1].body["messages"][-1]["content"][0]
    assert told["is_error"] is True and "declined" in told["content"]
    assert await refunds(pool) == before
    assert (await approval_rows(pool, session))[0]["decision"] == "denied"


async def test_confirm_from_a_second_connection_after_the_first_closed(
    gateway: GatewayServer, session: dict, fake_model: FakeAnthropic, pool
):
    fake_model.enqueue(Reply(tool_calls=[REFUND]), Reply(text="Done from the other tab."))
    first = await WsClient.open(gateway.ws_url)
    await park(first, session, "tab")
    await first.close()
    async with await WsClient.open(gateway.ws_url) as second:
        await second.send(
            {"action": "resume_turn", "requestId": "tab", "sessionId": session["sessionId"]}
        )
        replay = await second.recv_until(lambda e: e["type"] == "stream_chunk")
        assert kinds(replay) == ["write_confirmation_required", "chunk:toolCall"]
        await second.send(confirm(session, True, "conf2"))
        events = await second.recv_until(is_terminal("tab"))
    assert events[0]["type"] == "immediate_response" and events[0]["requestId"] == "conf2"
    assert tokens(events) == "Done from the other tab."
    assert events[-1]["type"] == "eventual_response"


async def test_confirm_on_a_fresh_connection_streams_the_rest(
    gateway: GatewayServer, client: WsClient, session: dict, fake_model: FakeAnthropic
):
    """A socket that confirms without re-attaching still gets the rest of the turn."""
    fake_model.enqueue(Reply(tool_calls=[REFUND]), Reply(text="All set."))
    await park(client, session, "fresh")
    async with await WsClient.open(gateway.ws_url) as other:
        await other.send(confirm(session, True))
        events = await other.recv_until(is_terminal("fresh"))
    assert collapse(kinds(events)) == [
        "immediate:200",
        "chunk:toolResult",
        "stream_token",
        "eventual_response",
    ]
    # The original socket sees the same resumed turn, without the ack.
    rest = await client.recv_until(is_terminal("fresh"))
    assert kinds(rest)[0] == "chunk:toolResult" and tokens(rest) == "All set."


async def test_expiry_and_a_late_confirm(settings, fake_model: FakeAnthropic, pool):
    hasty = GatewayServer(settings.model_copy(update={"approval_timeout": timedelta(seconds=1.5)}))
    await hasty.start()
    try:
        fake_model.enqueue(Reply(tool_calls=[REFUND]), Reply(text="The approval expired."))
        before = await refunds(pool)
        async with await WsClient.open(hasty.ws_url) as c:
            s = await c.create_session(str(uuid.uuid4()))
            await park(c, s, "exp")
            events = await c.recv_until(is_terminal("exp"), timeout=30)
            late = await c.request(confirm(s, True))
        result = events[0]["data"]["state"]["rawResponse"]["toolResult"]
        assert result["isError"] is True and "expired" in result["result"]
        assert events[-1]["type"] == "eventual_response"
        assert "expired" in fake_model.requests[1].body["messages"][-1]["content"][0]["content"]
        assert late["error"]["code"] == "NO_PENDING_CONFIRMATION"
        assert await refunds(pool) == before
        [row] = await approval_rows(pool, s)
        assert row["decision"] == "expired" and row["decided_by"] == "timeout"
    finally:
        await hasty.stop()


async def test_twenty_concurrent_confirms(
    gateway: GatewayServer, client: WsClient, session: dict, fake_model: FakeAnthropic, pool
):
    fake_model.enqueue(Reply(tool_calls=[REFUND]), Reply(text="Refunded once."))
    before = await refunds(pool)
    await park(client, session, "race")
    sockets = [await WsClient.open(gateway.ws_url) for _ in range(20)]
    try:
        await asyncio.gather(
            *(s.send(confirm(session, True, f"c{i}")) for i, s in enumerate(sockets))
        )
        answers = await asyncio.gather(*(s.recv() for s in sockets))
    finally:
        for s in sockets:
            await s.close()
    acks = [a for a in answers if a["type"] == "immediate_response"]
    refused = [a for a in answers if a["type"] == "error"]
    assert len(acks) == 1 and len(refused) == 19
    assert {r["error"]["code"] for r in refused} == {"NO_PENDING_CONFIRMATION"}
    await client.recv_until(is_terminal("race"))
    assert await refunds(pool) == before + 1


async def test_bad_confirms(client: WsClient, session: dict, fake_model: FakeAnthropic, pool):
    bad_shapes = [
        {"action": "confirm_tool_action", "requestId": "b1", "approved": True},
        {**confirm(session, "true")},
        {**confirm(session, 1)},
        {k: v for k, v in confirm(session, True).items() if k != "approved"},
    ]
    fake_model.enqueue(Reply(tool_calls=[REFUND]), Reply(text="ok"))
    before = await refunds(pool)
    await park(client, session, "bad")
    for frame in bad_shapes:
        event = await client.request(frame)
        assert event["error"]["code"] == "VALIDATION_ERROR", frame
    unknown = await client.request({**confirm(session, True), "sessionId": str(uuid.uuid4())})
    assert unknown["error"]["code"] == "NO_PENDING_CONFIRMATION"
    assert [r["decision"] for r in await approval_rows(pool, session)] == [None]  # still parked
    assert await refunds(pool) == before
    await client.send(confirm(session, False))
    await client.recv_until(is_terminal("bad"))


async def test_confirm_while_streaming_but_not_parked(
    client: WsClient, session: dict, fake_model: FakeAnthropic, pool
):
    fake_model.enqueue(Reply(text="just words, no tools", pause_after=2))
    await client.send(send(session, "np"))
    await fake_model.await_paused()
    await client.send(confirm(session, True))
    early = await client.recv_until(lambda e: e["type"] == "error")
    assert early[-1]["error"]["code"] == "NO_PENDING_CONFIRMATION"
    assert early[-1]["requestId"] == "conf"
    fake_model.release()
    events = early[:-1] + await client.recv_until(is_terminal("np"))
    assert tokens(events) == "just words, no tools"


async def test_cancel_while_parked(
    client: WsClient, session: dict, fake_model: FakeAnthropic, pool
):
    fake_model.enqueue(Reply(tool_calls=[REFUND]))
    before = await refunds(pool)
    await park(client, session, "cp")
    await client.send({"action": "cancel", "requestId": "cp", "sessionId": session["sessionId"]})
    events = await client.recv_until(is_terminal("cp"))
    assert kinds(events) == ["cancelled"] and events[0]["status"] == 499
    assert (await approval_rows(pool, session))[0]["decision"] == "cancelled"
    late = await client.request(confirm(session, True))
    assert late["error"]["code"] == "NO_PENDING_CONFIRMATION"
    assert await refunds(pool) == before


async def test_two_writes_in_one_turn_park_one_at_a_time(
    client: WsClient, session: dict, fake_model: FakeAnthropic, pool
):
    second = ToolCall("issue_refund", {"order_id": "ORD-2"})
    fake_model.enqueue(Reply(tool_calls=[REFUND, second]), Reply(text="One yes, one no."))
    await park(client, session, "two")
    await client.send(confirm(session, True, "yes"))
    middle = await client.recv_until(lambda e: e["type"] == "stream_chunk" and "toolCall" in str(e))
    assert kinds(middle) == [
        "immediate:200",
        "chunk:toolResult",
        "write_confirmation_required",
        "chunk:toolCall",
    ]
    assert middle[2]["data"]["data"]["actionDescription"] == "Issue a refund for order ORD-2"
    await client.send(confirm(session, False, "no"))
    rest = await client.recv_until(is_terminal("two"))
    assert kinds(rest)[:2] == ["immediate:200", "chunk:toolResult"]
    assert [r["decision"] for r in await approval_rows(pool, session)] == ["approved", "denied"]
    assert await refunds(pool, "ORD-2") == 0


async def test_confirm_tools_patterns_park_undeclared_tools(
    client: WsClient, session: dict, fake_model: FakeAnthropic
):
    from tests import tools_for_tests

    fake_model.enqueue(
        Reply(tool_calls=[ToolCall("delete_contact", {"email": "x@example.com"})]),
        Reply(text="Deleted."),
    )
    parked = await park(client, session, "pat")
    assert parked[1]["data"]["data"]["toolId"] == "delete_contact"
    assert "x@example.com" in parked[1]["data"]["data"]["actionDescription"]
    assert "x@example.com" not in tools_for_tests.DELETED
    await client.send(confirm(session, True))
    await client.recv_until(is_terminal("pat"))
    assert tools_for_tests.DELETED.count("x@example.com") == 1


async def test_official_client_approve_flow(
    gateway: GatewayServer, fake_model: FakeAnthropic, pool
):
    from smooth_operator import SmoothAgentClient

    fake_model.enqueue(Reply(tool_calls=[REFUND]), Reply(text="Refund issued."))
    before = await refunds(pool)
    client = SmoothAgentClient(url=gateway.ws_url, turn_timeout=30)
    await client.connect()
    try:
        s = await client.create_conversation_session(agent_id=str(uuid.uuid4()))
        turn = client.send_message(session_id=str(s.session_id), message="refund ORD-1234")
        seen = []
        async for event in turn:
            seen.append(event.type)
            if event.type == "write_confirmation_required":
                assert event.data.data.tool_id == "issue_refund"
                client.confirm_tool_action(
                    session_id=str(s.session_id), request_id=turn.request_id, approved=True
                )
        final = await turn
    finally:
        await client.disconnect()
    assert "write_confirmation_required" in seen and "stream_token" in seen
    assert final.data.data.response["responseParts"] == ["Refund issued."]
    assert await refunds(pool) == before + 1


async def test_a_claimed_verdict_whose_gateway_died_is_still_delivered(
    client: WsClient, session: dict, fake_model: FakeAnthropic, pool
):
    """Claim without signalling (as a gateway that died right after its claim would leave
    it): the reconciler delivers the verdict and the turn goes on."""
    from parley.storage import approvals

    fake_model.enqueue(Reply(tool_calls=[REFUND]), Reply(text="Delivered late."))
    await park(client, session, "rec")
    async with pool.connection() as conn:
        claimed = await approvals.claim(
            conn, session["sessionId"], approved=True, decided_by="a gateway that died"
        )
    assert claimed is not None
    events = await client.recv_until(is_terminal("rec"), timeout=30)
    assert collapse(kinds(events)) == ["chunk:toolResult", "stream_token", "eventual_response"]
    [row] = await approval_rows(pool, session)
    assert row["decision"] == "approved" and row["delivered_at"] is not None
