"""Rich interactions: a raise tool parks the turn on a form or choice chips until the visitor
answers with submit_interaction, from any connection; in one gateway process (the other
gateway process and the killed worker are in test_interaction_durability.py)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from parley.interactions.tools import CANNOT_SHOW, DECLINED, DECLINED_BEFORE, NO_RESPONSE
from parley.stack.fake_anthropic import FakeAnthropic, Reply, ToolCall
from tests.helpers import (
    Event,
    GatewayServer,
    WsClient,
    collapse,
    is_terminal,
    kinds,
    running_gateway,
    tokens,
)

pytestmark = pytest.mark.usefixtures("worker")

SUPPORTS = ["identity_form", "choice_chips"]
ASK_CONTACT = ToolCall(
    "request_identity_intake",
    {"fields": ["email", {"key": "phone", "required": False}], "reason": "to send you the quote"},
)
PLAN = {
    "question": "Which plan?",
    "header": "Plan",
    "options": [{"label": "Basic"}, {"label": "Pro", "description": "For teams"}],
}
ADDONS = {
    "question": "Any add-ons?",
    "header": "Add-ons",
    "options": [{"label": "Backup"}, {"label": "Support"}],
    "multiSelect": True,
}
ASK_PLAN = ToolCall("request_choices", {"questions": [PLAN, ADDONS], "reason": "to price it"})
RESUMED = ["immediate:200", "chunk:toolResult", "stream_token", "eventual_response"]
PARKED = ["immediate:202", "interaction_required", "chunk:toolCall"]


async def new_session(client: WsClient, **fields: Any) -> str:
    fields.setdefault("supports", SUPPORTS)
    return (await client.create_session(str(uuid.uuid4()), **fields))["sessionId"]


def send(session_id: str, request_id: str, message: str = "I'd like a quote") -> Event:
    return {
        "action": "send_message",
        "requestId": request_id,
        "sessionId": session_id,
        "message": message,
    }


async def ask(client: WsClient, session_id: str, request_id: str) -> Event:
    """Start a turn whose model raises an interaction; return its interaction_required."""
    await client.send(send(session_id, request_id))
    parked = await client.recv_until(lambda e: e["type"] == "stream_chunk")
    assert kinds(parked) == PARKED, parked
    return parked[1]


def submit(session_id: str, asked: Event, **fields: Any) -> Event:
    return {
        "action": "submit_interaction",
        "requestId": asked["requestId"],
        "sessionId": session_id,
        "interactionId": asked["data"]["data"]["interactionId"],
        **fields,
    }


def tool_result(events: list[Event]) -> dict[str, Any]:
    chunk = next(e for e in events if kinds([e]) == ["chunk:toolResult"])
    return chunk["data"]["state"]["rawResponse"]["toolResult"]


def told(fake_model: FakeAnthropic, request: int = 1) -> dict[str, Any]:
    """The raise tool's result as the model read it in request `request`."""
    block = fake_model.requests[request].body["messages"][-1]["content"][0]
    assert block["type"] == "tool_result"
    return {"is_error": block.get("is_error", False), **json.loads(block["content"])}


def decided(kind: str, outcome: str) -> float:
    """parley_interactions_decided_total so far (the gateway and worker of the suite run in
    this process, so they share its registry)."""
    labels = {"kind": kind, "outcome": outcome}
    return REGISTRY.get_sample_value("parley_interactions_decided_total", labels) or 0.0


async def rows(pool, session_id: str) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "select kind, status, answer, decided_by, invalid_submits, delivered_at is not null"
            " as delivered from interactions where session_id = %s order by created_at",
            (session_id,),
        )
        return await cur.fetchall()


async def test_identity_form_park_and_submit(
    client: WsClient, fake_model: FakeAnthropic, pool
) -> None:
    fake_model.enqueue(
        Reply(tool_calls=[ASK_CONTACT]),
        Reply(text="Thanks, the quote is on its way."),
        Reply(tool_calls=[ToolCall("whoami")]),
        Reply(text="You are Ada."),
    )
    session_id = await new_session(client, userName="Ada Lovelace")
    asked = await ask(client, session_id, "id1")
    interaction_id = asked["data"]["data"]["interactionId"]
    assert asked["requestId"] == "id1"
    assert asked["data"] == {
        "requestId": "id1",
        "data": {
            "interactionId": interaction_id,
            "kind": "identity_intake",
            "spec": {
                "fields": [
                    {"key": "email", "required": True},
                    {"key": "phone", "required": False},
                ]
            },
            "reason": "to send you the quote",
        },
    }
    assert uuid.UUID(interaction_id)  # minted by the server
    assert [r["status"] for r in await rows(pool, session_id)] == [None]

    await client.send(
        submit(
            session_id, asked, values={"email": " ada@example.com ", "phone": "+44 20 7946 0958"}
        )
    )
    events = await client.recv_until(is_terminal("id1"))
    assert collapse(kinds(events)) == RESUMED
    ack = events[0]
    assert ack["requestId"] == "id1" and ack["message"] == "Interaction submitted"
    assert ack["data"] == {
        "sessionId": session_id,
        "interactionId": interaction_id,
        "declined": False,
    }
    values = {"email": "ada@example.com", "phone": "+442079460958"}
    assert tool_result(events) == {
        "name": "request_identity_intake",
        "isError": False,
        "result": {"status": "submitted", "values": values},
    }
    assert told(fake_model) == {"is_error": False, "status": "submitted", "values": values}
    assert tokens(events) == "Thanks, the quote is on its way."
    [row] = await rows(pool, session_id)
    assert row["status"] == "submitted" and row["answer"] == values and row["delivered"]
    assert row["decided_by"].startswith("connection ")

    # Stored on the session's visitor, and visible to a later turn's tools.
    later = await _turn(client, session_id, "id2")
    assert tool_result(later)["result"] == {"name": "Ada Lovelace", **values}


async def _turn(client: WsClient, session_id: str, request_id: str) -> list[Event]:
    await client.send(send(session_id, request_id))
    return await client.recv_until(is_terminal(request_id))


async def test_choices_invalid_then_valid(client: WsClient, fake_model: FakeAnthropic, pool):
    fake_model.enqueue(Reply(tool_calls=[ASK_PLAN]), Reply(text="Pro with backups it is."))
    session_id = await new_session(client)
    asked = await ask(client, session_id, "ch")
    assert asked["data"]["data"]["kind"] == "choices"
    assert asked["data"]["data"]["spec"] == {"questions": [{**PLAN, "multiSelect": False}, ADDONS]}

    wrong = {"answers": [{"header": "Plan", "options": ["Basic", "Gold"]}]}
    invalid = await client.request(submit(session_id, asked, values=wrong))
    assert invalid["type"] == "interaction_invalid" and invalid["requestId"] == "ch"
    assert invalid["data"] == {
        "requestId": "ch",
        "data": {
            "interactionId": asked["data"]["data"]["interactionId"],
            "kind": "choices",
            "errors": [
                {"field": "Plan", "message": "'Gold' is not one of the offered options"},
                {"field": "Add-ons", "message": "this question must be answered"},
            ],
            "message": "Some fields need attention.",
        },
    }
    two = {"answers": [{"header": "Plan", "options": ["Basic", "Pro"]}, {"header": "Add-ons"}]}
    invalid = await client.request(submit(session_id, asked, values=two))
    assert [e["message"] for e in invalid["data"]["data"]["errors"]] == [
        "this question takes a single answer",
        "select an option or provide an 'other' answer",
    ]
    [row] = await rows(pool, session_id)
    assert row["status"] is None and row["invalid_submits"] == 2  # still parked

    right = {
        "answers": [
            {"header": "Plan", "options": ["Pro"]},
            {"header": "Add-ons", "options": ["Backup"], "other": "priority support"},
        ]
    }
    await client.send(submit(session_id, asked, kind="choices", values=right))
    events = await client.recv_until(is_terminal("ch"))
    assert collapse(kinds(events)) == RESUMED
    result = tool_result(events)["result"]
    assert result == {
        "status": "submitted",
        "values": {
            "answers": [
                {"header": "Plan", "options": ["Pro"]},
                {"header": "Add-ons", "options": ["Backup"], "other": "priority support"},
            ]
        },
    }
    assert told(fake_model)["values"] == result["values"]


async def test_identity_invalid_then_valid(client: WsClient, fake_model: FakeAnthropic, pool):
    fake_model.enqueue(Reply(tool_calls=[ASK_CONTACT]), Reply(text="Got it."))
    session_id = await new_session(client)
    asked = await ask(client, session_id, "iv")
    invalid = await client.request(
        submit(session_id, asked, values={"email": "ada@", "phone": "555 1234"})
    )
    assert invalid["type"] == "interaction_invalid"
    assert invalid["data"]["data"]["errors"] == [
        {"field": "email", "message": "must be a valid email address"},
        {
            "field": "phone",
            "message": "must be a valid phone number (include your country code, e.g."
            " +1 555 123 4567)",
        },
    ]
    blank = await client.request(submit(session_id, asked, values={"email": " "}))
    assert blank["data"]["data"]["errors"] == [
        {"field": "email", "message": "this field is required"}
    ]
    await client.send(submit(session_id, asked, values={"email": "ada@example.com"}))
    events = await client.recv_until(is_terminal("iv"))
    assert tool_result(events)["result"]["values"] == {"email": "ada@example.com"}
    async with pool.connection() as conn:
        cur = await conn.execute(
            "select p.email, p.phone from sessions s join participants p"
            " on p.id = s.user_participant_id where s.id = %s",
            (session_id,),
        )
        assert await cur.fetchone() == {"email": "ada@example.com", "phone": None}


async def test_declined_and_not_asked_again(client: WsClient, fake_model: FakeAnthropic, pool):
    fake_model.enqueue(
        Reply(tool_calls=[ASK_CONTACT]),
        Reply(text="No problem."),
        Reply(tool_calls=[ASK_CONTACT]),
        Reply(text="Understood, I will not ask again."),
    )
    session_id = await new_session(client)
    asked = await ask(client, session_id, "dc")
    # `values` is ignored with declined: true, even a bad one.
    await client.send(submit(session_id, asked, declined=True, values="ignored"))
    events = await client.recv_until(is_terminal("dc"))
    assert collapse(kinds(events)) == RESUMED
    assert events[0]["message"] == "Interaction declined" and events[0]["data"]["declined"]
    assert tool_result(events) == {
        "name": "request_identity_intake",
        "isError": False,
        "result": {"status": "declined", "message": DECLINED},
    }
    assert told(fake_model) == {"is_error": False, "status": "declined", "message": DECLINED}

    # The model asks again in a later turn: the tool answers at once, nothing parks.
    again = await _turn(client, session_id, "dc2")
    assert collapse(kinds(again)) == [
        "immediate:202",
        "chunk:toolCall",
        "chunk:toolResult",
        "stream_token",
        "eventual_response",
    ]
    assert tool_result(again)["result"] == {"status": "declined", "message": DECLINED_BEFORE}
    assert tool_result(again)["isError"] is False
    assert [r["status"] for r in await rows(pool, session_id)] == ["declined"]

    # The reply's record keeps the decision, tied to its call (history after a reload).
    page = await client.request(
        {"action": "get_conversation_messages", "requestId": "h", "sessionId": session_id}
    )
    first_reply = [m for m in page["data"]["messages"] if m["direction"] == "outbound"][-1]
    record = first_reply["content"]["structuredResponse"]
    [call] = record["toolCalls"]
    assert call["name"] == "request_identity_intake" and call["result"]["status"] == "declined"
    assert record["decisions"] == [
        {
            "kind": "interaction",
            "toolCallId": call["id"],
            "tool": "request_identity_intake",
            "outcome": "declined",
            "description": "to send you the quote",
        }
    ]


async def test_stale_or_foreign_interaction_id_and_other_kind(
    client: WsClient, fake_model: FakeAnthropic, pool
) -> None:
    fake_model.enqueue(Reply(tool_calls=[ASK_CONTACT]), Reply(text="Thanks."))
    session_id = await new_session(client)
    asked = await ask(client, session_id, "st")
    for frame in (
        submit(session_id, asked, values={"email": "a@b.io"}, interactionId=str(uuid.uuid4())),
        submit(session_id, asked, values={"email": "a@b.io"}, interactionId="not-a-uuid"),
        submit(session_id, asked, values={"email": "a@b.io"}, kind="choices"),
        submit(session_id, asked, declined=True, kind="choices"),
    ):
        refused = await client.request(frame)
        assert refused["type"] == "error", frame
        assert refused["error"]["code"] == "INTERACTION_MISMATCH", frame
    # Another session's question is foreign too, even with its right id.
    other = await new_session(client)
    foreign = await client.request(submit(other, asked, values={"email": "a@b.io"}))
    assert foreign["error"]["code"] == "NO_PENDING_INTERACTION"
    assert [r["status"] for r in await rows(pool, session_id)] == [None]  # still parked
    await client.send(submit(session_id, asked, values={"email": "a@b.io"}))
    events = await client.recv_until(is_terminal("st"))
    assert tool_result(events)["result"]["status"] == "submitted"


async def test_bad_submits(client: WsClient, fake_model: FakeAnthropic, pool) -> None:
    fake_model.enqueue(Reply(tool_calls=[ASK_CONTACT]), Reply(text="ok"))
    session_id = await new_session(client)
    asked = await ask(client, session_id, "bad")
    frame = submit(session_id, asked, values={"email": "a@b.io"})
    missing = [
        ({k: v for k, v in frame.items() if k != "requestId"}, "requestId"),
        ({k: v for k, v in frame.items() if k != "sessionId"}, "sessionId"),
        ({k: v for k, v in frame.items() if k != "interactionId"}, "interactionId"),
    ]
    for bad, field in missing:
        event = await client.request(bad)
        assert event["error"]["code"] == "VALIDATION_ERROR", bad
        assert field in event["error"]["message"]
    for bad in (
        {**frame, "values": ["a@b.io"]},
        {**frame, "values": None},
        {**frame, "declined": "yes"},
        {**frame, "declined": 1},
        {**frame, "values": {"email": "a@b.io", "pad": "x" * 20_000}},
    ):
        event = await client.request(bad)
        assert event["error"]["code"] == "VALIDATION_ERROR", bad
    unknown = await client.request({**frame, "sessionId": str(uuid.uuid4())})
    assert unknown["error"]["code"] == "SESSION_NOT_FOUND"
    assert [r["status"] for r in await rows(pool, session_id)] == [None]
    await client.send({**frame, "declined": False})
    await client.recv_until(is_terminal("bad"))


async def test_nothing_parked(client: WsClient, fake_model: FakeAnthropic) -> None:
    session_id = await new_session(client)
    nothing = {
        "action": "submit_interaction",
        "requestId": "np",
        "sessionId": session_id,
        "interactionId": str(uuid.uuid4()),
        "values": {"email": "a@b.io"},
    }
    event = await client.request(nothing)
    assert event["error"]["code"] == "NO_PENDING_INTERACTION"
    # Nothing parked beats a bad shape (PROTOCOL.md's order).
    event = await client.request({**nothing, "values": "not an object"})
    assert event["error"]["code"] == "NO_PENDING_INTERACTION"
    # A turn parked on an approval is not parked on an interaction.
    refund = ToolCall("issue_refund", {"order_id": "ORD-1"})
    fake_model.enqueue(Reply(tool_calls=[refund]), Reply(text="ok"))
    await client.send(send(session_id, "ap"))
    parked = await client.recv_until(lambda e: e["type"] == "stream_chunk")
    assert kinds(parked) == ["immediate:202", "write_confirmation_required", "chunk:toolCall"]
    event = await client.request({**nothing, "requestId": "ap"})
    assert event["error"]["code"] == "NO_PENDING_INTERACTION"
    await client.send(
        {
            "action": "confirm_tool_action",
            "requestId": "c",
            "sessionId": session_id,
            "approved": False,
        }
    )
    await client.recv_until(is_terminal("ap"))


@pytest.mark.parametrize(
    "supports", [None, [], ["choice_chips"]], ids=["no-supports", "empty", "other-kind"]
)
async def test_without_the_capability_the_tool_answers_at_once(
    client: WsClient, fake_model: FakeAnthropic, pool, supports: list[str] | None
) -> None:
    fake_model.enqueue(Reply(tool_calls=[ASK_CONTACT]), Reply(text="What is your email?"))
    fields = {} if supports is None else {"supports": supports}
    session_id = (await client.create_session(str(uuid.uuid4()), **fields))["sessionId"]
    await client.send(send(session_id, "fb"))
    events = await client.recv_until(is_terminal("fb"))
    assert collapse(kinds(events)) == [
        "immediate:202",
        "chunk:toolCall",
        "chunk:toolResult",
        "stream_token",
        "eventual_response",
    ]
    result = tool_result(events)
    assert result["isError"] is False
    wanted = "their email address, phone number (optional) (to send you the quote)"
    assert result["result"] == {"status": "no_response", "message": CANNOT_SHOW.format(wanted)}
    assert "plain conversation" in told(fake_model)["message"]
    assert await rows(pool, session_id) == []


async def test_arguments_that_ask_no_question_are_an_error_result(
    client: WsClient, fake_model: FakeAnthropic, pool
) -> None:
    same_header = ToolCall("request_choices", {"questions": [PLAN, PLAN], "reason": "r"})
    fake_model.enqueue(Reply(tool_calls=[same_header]), Reply(text="Let me rephrase."))
    session_id = await new_session(client)
    events = await _turn(client, session_id, "ia")
    assert "interaction_required" not in kinds(events)
    result = tool_result(events)
    assert result["isError"] is True and "used twice" in result["result"]
    assert await rows(pool, session_id) == []


async def test_supports_belong_to_the_conversation(
    client: WsClient, fake_model: FakeAnthropic, pool
) -> None:
    """A session that resumes the conversation without `supports` inherits them; one that
    sends the key (even empty) replaces them."""
    browser = {"browserFingerprint": f"fp-{uuid.uuid4().hex}"}
    first = await client.create_session(str(uuid.uuid4()), supports=SUPPORTS, **browser)
    agent, conversation = first["agentId"], first["conversationId"]
    resumed = await client.create_session(agent, conversationId=conversation, **browser)
    assert resumed["conversationId"] == conversation
    fake_model.enqueue(Reply(tool_calls=[ASK_CONTACT]), Reply(text="ok"))
    asked = await ask(client, resumed["sessionId"], "inh")
    await client.send(submit(resumed["sessionId"], asked, declined=True))
    await client.recv_until(is_terminal("inh"))

    text_only = await client.create_session(
        agent, conversationId=conversation, supports=[], **browser
    )
    fake_model.enqueue(Reply(tool_calls=[ASK_PLAN]), Reply(text="Which plan?"))
    events = await _turn(client, text_only["sessionId"], "txt")
    assert "interaction_required" not in kinds(events)
    assert tool_result(events)["result"]["status"] == "no_response"
    async with pool.connection() as conn:
        cur = await conn.execute(
            "select supports from conversations where id = %s", (conversation,)
        )
        assert (await cur.fetchone())["supports"] == []


async def test_expiry_is_no_response(settings, fake_model: FakeAnthropic, pool) -> None:
    """Its own timeout (PARLEY_INTERACTION_TIMEOUT) closes the question as `no_response`;
    the approval timeout stays as it is."""
    quick = settings.model_copy(update={"interaction_timeout": timedelta(seconds=1.5)})
    expired_before = decided("identity_intake", "expired")
    async with running_gateway(quick) as gateway, await WsClient.open(gateway.ws_url) as c:
        fake_model.enqueue(Reply(tool_calls=[ASK_CONTACT]), Reply(text="Never mind."))
        session_id = await new_session(c)
        asked = await ask(c, session_id, "exp")
        events = await c.recv_until(is_terminal("exp"), timeout=30)
        late = await c.request(submit(session_id, asked, values={"email": "a@b.io"}))
    assert collapse(kinds(events)) == ["chunk:toolResult", "stream_token", "eventual_response"]
    assert tool_result(events) == {
        "name": "request_identity_intake",
        "isError": False,
        "result": {"status": "no_response", "message": NO_RESPONSE},
    }
    assert told(fake_model)["status"] == "no_response"
    assert late["error"]["code"] == "NO_PENDING_INTERACTION"
    [row] = await rows(pool, session_id)
    assert row["status"] == "expired" and row["decided_by"] == "timeout"
    assert decided("identity_intake", "expired") == expired_before + 1
    assert quick.approval_timeout == timedelta(minutes=30)


async def test_submit_from_a_second_connection(
    gateway: GatewayServer, client: WsClient, fake_model: FakeAnthropic
) -> None:
    """A socket that answers without re-attaching gets the rest of the turn; the asking
    socket sees the same resumed turn, without the ack."""
    fake_model.enqueue(Reply(tool_calls=[ASK_PLAN]), Reply(text="Basic it is."))
    session_id = await new_session(client)
    asked = await ask(client, session_id, "two")
    answer = {
        "answers": [
            {"header": "Plan", "options": ["Basic"]},
            {"header": "Add-ons", "other": "none"},
        ]
    }
    async with await WsClient.open(gateway.ws_url) as other:
        await other.send(submit(session_id, asked, values=answer))
        events = await other.recv_until(is_terminal("two"))
    assert collapse(kinds(events)) == RESUMED and tokens(events) == "Basic it is."
    rest = await client.recv_until(is_terminal("two"))
    assert collapse(kinds(rest)) == RESUMED[1:] and tokens(rest) == "Basic it is."


async def test_a_reload_shows_the_question_again(
    gateway: GatewayServer, fake_model: FakeAnthropic
) -> None:
    fake_model.enqueue(Reply(tool_calls=[ASK_CONTACT]), Reply(text="Thanks for that."))
    first = await WsClient.open(gateway.ws_url)
    session_id = await new_session(first)
    asked = await ask(first, session_id, "rl")
    await first.close()
    async with await WsClient.open(gateway.ws_url) as second:
        await second.send({"action": "resume_turn", "requestId": "rl", "sessionId": session_id})
        replay = await second.recv_until(lambda e: e["type"] == "stream_chunk")
        assert kinds(replay) == ["interaction_required", "chunk:toolCall"]
        assert replay[0]["data"] == asked["data"]
        await second.send(submit(session_id, replay[0], values={"email": "a@b.io"}))
        events = await second.recv_until(is_terminal("rl"))
    assert collapse(kinds(events)) == RESUMED and tokens(events) == "Thanks for that."


async def test_twenty_concurrent_submits(
    gateway: GatewayServer, client: WsClient, fake_model: FakeAnthropic, pool
) -> None:
    fake_model.enqueue(Reply(tool_calls=[ASK_CONTACT]), Reply(text="Once."))
    session_id = await new_session(client)
    asked = await ask(client, session_id, "race")
    before = decided("identity_intake", "submitted")
    sockets = [await WsClient.open(gateway.ws_url) for _ in range(20)]
    try:
        await asyncio.gather(
            *(
                s.send(submit(session_id, asked, values={"email": f"v{i}@example.com"}))
                for i, s in enumerate(sockets)
            )
        )
        answers = await asyncio.gather(*(s.recv() for s in sockets))
    finally:
        for s in sockets:
            await s.close()
    acks = [a for a in answers if a["type"] == "immediate_response"]
    refused = [a for a in answers if a["type"] == "error"]
    assert len(acks) == 1 and len(refused) == 19
    assert {r["error"]["code"] for r in refused} == {"NO_PENDING_INTERACTION"}
    events = await client.recv_until(is_terminal("race"))
    assert [e for e in events if kinds([e]) == ["chunk:toolResult"]].__len__() == 1
    [row] = await rows(pool, session_id)
    winner = tool_result(events)["result"]["values"]
    assert row["answer"] == winner and winner["email"].endswith("@example.com")
    assert decided("identity_intake", "submitted") == before + 1  # counted where the claim won


async def test_cancel_while_parked(client: WsClient, fake_model: FakeAnthropic, pool) -> None:
    fake_model.enqueue(Reply(tool_calls=[ASK_PLAN]))
    session_id = await new_session(client)
    asked = await ask(client, session_id, "cx")
    await client.send({"action": "cancel", "requestId": "cx", "sessionId": session_id})
    events = await client.recv_until(is_terminal("cx"))
    assert kinds(events) == ["cancelled"] and events[0]["status"] == 499
    [row] = await rows(pool, session_id)
    assert row["status"] == "cancelled"
    late = await client.request(submit(session_id, asked, declined=True))
    assert late["error"]["code"] == "NO_PENDING_INTERACTION"
    assert len(fake_model.requests) == 1  # the model was not called again


async def test_invalid_submits_are_limited(settings, fake_model: FakeAnthropic, pool) -> None:
    strict = settings.model_copy(update={"interaction_max_invalid": 2})
    async with running_gateway(strict) as gateway, await WsClient.open(gateway.ws_url) as c:
        fake_model.enqueue(Reply(tool_calls=[ASK_CONTACT]), Reply(text="ok"))
        session_id = await new_session(c)
        asked = await ask(c, session_id, "lim")
        bad = submit(session_id, asked, values={"email": "nope"})
        assert (await c.request(bad))["type"] == "interaction_invalid"
        assert (await c.request(bad))["type"] == "interaction_invalid"
        refused = await c.request(bad)
        assert refused["error"]["code"] == "RATE_LIMITED"
        [row] = await rows(pool, session_id)
        assert row["status"] is None and row["invalid_submits"] == 2
        # A valid answer (or a decline) is still taken.
        await c.send(submit(session_id, asked, values={"email": "yes@example.com"}))
        events = await c.recv_until(is_terminal("lim"))
    assert tool_result(events)["result"]["status"] == "submitted"


async def test_a_claimed_answer_whose_gateway_died_is_still_delivered(
    client: WsClient, fake_model: FakeAnthropic, pool
) -> None:
    """Claim without signalling (as a gateway that died right after its claim would leave
    it): the reconciler delivers the answer and the turn goes on."""
    from parley.storage import interactions

    fake_model.enqueue(Reply(tool_calls=[ASK_CONTACT]), Reply(text="Delivered late."))
    session_id = await new_session(client)
    asked = await ask(client, session_id, "rec")
    async with pool.connection() as conn:
        claimed = await interactions.claim(
            conn,
            asked["data"]["data"]["interactionId"],
            session_id,
            status="submitted",
            answer={"email": "late@example.com"},
            decided_by="a gateway that died",
        )
    assert claimed is not None
    events = await client.recv_until(is_terminal("rec"), timeout=30)
    assert collapse(kinds(events)) == ["chunk:toolResult", "stream_token", "eventual_response"]
    assert tool_result(events)["result"]["values"] == {"email": "late@example.com"}
    [row] = await rows(pool, session_id)
    assert row["delivered"]


async def test_official_client_submits_an_interaction(
    gateway: GatewayServer, fake_model: FakeAnthropic
) -> None:
    from smooth_operator import SmoothAgentClient

    fake_model.enqueue(Reply(tool_calls=[ASK_CONTACT]), Reply(text="Quote sent."))
    # Its create_conversation_session has no `supports` yet: the session is made here.
    async with await WsClient.open(gateway.ws_url) as ours:
        session_id = await new_session(ours)
    client = SmoothAgentClient(url=gateway.ws_url, turn_timeout=30)
    await client.connect()
    try:
        turn = client.send_message(session_id=session_id, message="a quote, please")
        seen = []
        async for event in turn:
            seen.append(event.type)
            if event.type == "interaction_required":
                asked = event.data.data
                assert asked.kind == "identity_intake" and asked.reason == "to send you the quote"
                client.submit_interaction(
                    session_id=session_id,
                    request_id=turn.request_id,
                    interaction_id=asked.interaction_id,
                    kind=asked.kind,
                    values={"email": "ada@example.com"},
                )
        final = await turn
    finally:
        await client.disconnect()
    assert "interaction_required" in seen and "stream_token" in seen
    assert final.data.data.response["responseParts"] == ["Quote sent."]
