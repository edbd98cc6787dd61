"""History that keeps what happened: `get_conversation_messages` returns, for each agent
reply, `content.structuredResponse` with its citations, tool calls and results, decisions
and how the turn ended; a stopped or failed turn leaves a marked message in its place. Every
page is parsed with the published client's `GetMessagesResponse`."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import pytest
from smooth_operator.types import GetMessagesResponse
from temporalio.client import WorkflowFailureError

from parley.knowledge import documents
from parley.knowledge.types import Access, Document
from parley.stack.fake_anthropic import FakeAnthropic, Reply, ToolCall
from parley.storage import sessions
from parley.turn.record import CUT_SHORT_TEXT, MAX_CHARS
from parley.turn.types import turn_id
from tests.helpers import GatewayServer, WsClient, is_terminal, run_turn, tokens
from tests.test_approvals import REFUND, confirm, park, send

pytestmark = pytest.mark.usefixtures("worker")

RETURNS = "# Returns\n\nReturns are accepted within 17 days of delivery, unused."


async def grounded_session(client: WsClient, pool) -> dict:
    """A session in an organization of its own, whose knowledge holds the returns policy."""
    org_id, agent_id = f"org-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
    async with pool.connection() as conn:
        await sessions.upsert_agent(conn, agent_id, name="Shop", org_id=org_id)
        await documents.upsert_document(
            conn,
            org_id,
            Document(
                "returns.md", "Returns", "https://shop.example.com/returns", RETURNS, Access(True)
            ),
        )
    return await client.create_session(agent_id)


async def history(client: WsClient, session: dict) -> list[Any]:
    """The conversation, oldest first, as the published client reads it."""
    reply = await client.request(
        {"action": "get_conversation_messages", "requestId": "h", "sessionId": session["sessionId"]}
    )
    page = GetMessagesResponse.model_validate(reply["data"])
    return list(reversed(page.messages))


def record(message: Any) -> dict[str, Any]:
    assert message.direction == "outbound"
    assert message.content.structured_response is not None, message
    return message.content.structured_response


async def test_a_reload_shows_the_approved_refund_and_the_citations(
    client: WsClient, pool, fake_model: FakeAnthropic
) -> None:
    session = await grounded_session(client, pool)
    fake_model.enqueue(
        Reply(tool_calls=[ToolCall("order_status", {"order_id": "ORD-1234"})]),
        Reply(tool_calls=[REFUND]),
        Reply(text="Refunded: it was within the 17 days."),
    )
    await client.send(
        send(session, "refund", "Refund ORD-1234: I returned it within 17 days")
    )  # the read tool runs, then the refund parks
    await client.recv_until(lambda e: e["type"] == "write_confirmation_required")
    await client.send(confirm(session, True))
    events = await client.recv_until(is_terminal("refund"))
    final = events[-1]["data"]["data"]

    user, reply = await history(client, session)
    assert user.direction == "inbound" and user.content.structured_response is None
    assert str(reply.id) == final["messageId"]
    assert reply.content.text == "Refunded: it was within the 17 days."
    shown = record(reply)
    assert shown["status"] == "completed"
    assert shown["needsEscalation"] is False and shown["resolutionStatus"] == "in_progress"
    assert "escalationReason" not in shown and "truncated" not in shown
    # The citations, as eventual_response gave them.
    assert shown["citations"] == final["citations"]
    assert shown["citations"][0]["id"] == "returns.md"
    assert shown["citations"][0]["url"] == "https://shop.example.com/returns"
    # The tools called, in order, with their arguments and results.
    status, refund = shown["toolCalls"]
    assert status["name"] == "order_status" and status["arguments"] == {"order_id": "ORD-1234"}
    assert status["isError"] is False and status["result"]["status"] == "shipped"
    assert refund["name"] == "issue_refund" and refund["arguments"] == REFUND.input
    assert refund["isError"] is False and refund["result"]["status"] == "refunded"
    # The decision on the refund, tied to its call.
    assert shown["decisions"] == [
        {
            "kind": "approval",
            "toolCallId": refund["id"],
            "tool": "issue_refund",
            "outcome": "approved",
            "description": "Issue a refund for order ORD-1234 (damaged)",
            "decidedBy": "visitor",
        }
    ]


async def test_a_declined_write_shows_as_declined(
    client: WsClient, pool, fake_model: FakeAnthropic
) -> None:
    session = await client.create_session(str(uuid.uuid4()))
    fake_model.enqueue(Reply(tool_calls=[REFUND]), Reply(text="I did not refund it."))
    await park(client, session, "deny")
    await client.send(confirm(session, False))
    await client.recv_until(is_terminal("deny"))
    _, reply = await history(client, session)
    shown = record(reply)
    [call] = shown["toolCalls"]
    assert call["isError"] is True and "declined" in call["result"]
    assert [(d["toolCallId"], d["outcome"]) for d in shown["decisions"]] == [(call["id"], "denied")]
    assert "citations" in shown and shown["citations"] == []


async def test_a_stopped_turn_stays_stopped_after_a_reload(
    client: WsClient, pool, fake_model: FakeAnthropic
) -> None:
    session = await client.create_session(str(uuid.uuid4()))
    fake_model.enqueue(Reply(text="this answer will never be finished", pause_after=3))
    await client.send(
        {
            "action": "send_message",
            "requestId": "s",
            "sessionId": session["sessionId"],
            "message": "go",
        }
    )
    await fake_model.await_paused()
    await client.send({"action": "cancel", "requestId": "s", "sessionId": session["sessionId"]})
    await client.recv_until(is_terminal("s"))
    # The next message at once: the stopped turn's place in the conversation is already held.
    fake_model.enqueue(Reply(text="Here is the answer."))
    after = await run_turn(client, session["sessionId"], "again", "s2")
    assert tokens(after) == "Here is the answer."

    go, stopped, again, answer = await history(client, session)
    assert (go.content.text, again.content.text) == ("go", "again")
    assert stopped.direction == "outbound"
    assert stopped.content.text == CUT_SHORT_TEXT["cancelled"]  # no partial output
    assert record(stopped)["status"] == "cancelled"
    assert record(answer)["status"] == "completed"
    # The notice is the page's, not the model's: the next turn's model did not read it.
    sent = str(fake_model.requests[-1].body["messages"])
    assert "go" in sent and CUT_SHORT_TEXT["cancelled"] not in sent


async def test_a_turn_stopped_while_parked_keeps_its_question(
    gateway: GatewayServer, client: WsClient, fake_model: FakeAnthropic
) -> None:
    session = await client.create_session(str(uuid.uuid4()))
    fake_model.enqueue(Reply(text="Let me refund that.", tool_calls=[REFUND]))
    await park(client, session, "parked")
    await client.send(
        {"action": "cancel", "requestId": "parked", "sessionId": session["sessionId"]}
    )
    await client.recv_until(is_terminal("parked"))
    turn = await _turn_closed(gateway, client, session, "parked")
    shown = record(turn)
    assert shown["status"] == "cancelled"
    [call] = shown["toolCalls"]
    assert call["name"] == "issue_refund" and call["arguments"] == REFUND.input
    assert "result" not in call and "isError" not in call  # it never ran
    assert [(d["toolCallId"], d["outcome"]) for d in shown["decisions"]] == [
        (call["id"], "cancelled")
    ]


async def _turn_closed(gateway: GatewayServer, client: WsClient, session: dict, request_id: str):
    """The stopped turn's message once its workflow has closed: the cancel leaves the
    message at once, the turn's last step then fills in what the turn did."""
    handle = gateway.services.temporal.get_workflow_handle(
        turn_id(session["sessionId"], request_id)
    )
    with contextlib.suppress(WorkflowFailureError):  # a cancelled turn ends as a failure
        await handle.result()
    return (await history(client, session))[-1]


async def test_a_failed_turn_shows_what_it_did_before_it_failed(
    client: WsClient, pool, fake_model: FakeAnthropic
) -> None:
    session = await client.create_session(str(uuid.uuid4()))
    fake_model.enqueue(
        Reply(tool_calls=[ToolCall("order_status", {"order_id": "A1"})]),
        Reply(status=400, error_message="prompt is too long"),
    )
    events = await run_turn(client, session["sessionId"], "where is A1?", "fail")
    assert events[-1]["type"] == "error" and events[-1]["error"]["code"] == "AGENT_ERROR"
    user, failed = await history(client, session)
    assert user.content.text == "where is A1?"
    assert failed.content.text == CUT_SHORT_TEXT["failed"]
    shown = record(failed)
    assert shown["status"] == "failed"
    [call] = shown["toolCalls"]
    assert call["name"] == "order_status" and call["result"]["carrier"] == "DHL"
    assert shown["decisions"] == []


async def test_a_reply_cut_at_the_output_limit_says_so_in_its_record(
    client: WsClient, fake_model: FakeAnthropic
) -> None:
    session = await client.create_session(str(uuid.uuid4()))
    fake_model.enqueue(
        Reply(
            text="Checking",
            tool_calls=[ToolCall("order_status", {"order_id": "A"})],
            stop_reason="max_tokens",
        )
    )
    await run_turn(client, session["sessionId"], "where?", "cut")
    _, reply = await history(client, session)
    shown = record(reply)
    assert shown["status"] == "completed" and shown["truncated"] == "length"
    assert shown["toolCalls"] == []  # the call the limit cut off never ran, nor showed


async def test_large_tool_results_are_bounded(client: WsClient, fake_model: FakeAnthropic) -> None:
    session = await client.create_session(str(uuid.uuid4()))
    big = {"order_id": "B" * (MAX_CHARS * 2)}
    fake_model.enqueue(Reply(tool_calls=[ToolCall("order_status", big)]), Reply(text="ok"))
    await run_turn(client, session["sessionId"], "big", "big")
    _, reply = await history(client, session)
    [call] = record(reply)["toolCalls"]
    assert isinstance(call["arguments"], str) and len(call["arguments"]) == MAX_CHARS + 1
    assert isinstance(call["result"], str) and call["result"].endswith("…")


async def test_text_before_and_after_a_tool_call_stays_apart_and_in_order(
    client: WsClient, fake_model: FakeAnthropic
) -> None:
    session = await client.create_session(str(uuid.uuid4()))
    fake_model.enqueue(
        Reply(text="Let me do that.", tool_calls=[ToolCall("order_status", {"order_id": "A"})]),
        Reply(text="Tool finished: it shipped."),
    )
    events = await run_turn(client, session["sessionId"], "where is A?", "apart")
    # Every client reads two paragraphs, never "Let me do that.Tool finished…".
    both = "Let me do that.\n\nTool finished: it shipped."
    assert events[-1]["data"]["data"]["response"]["responseParts"] == [both]
    _, reply = await history(client, session)
    assert reply.content.text == both
    # The record keeps which text came before the tool call, for a reload to show it there.
    shown = record(reply)
    assert shown["texts"] == ["Let me do that.", "Tool finished: it shipped."]
    assert [c["iteration"] for c in shown["toolCalls"]] == [0]
