"""Escalation to a person: the built-in `escalate_to_human` tool, the turn's escalation fields,
the mark in PostgreSQL, and the admin API's queue of escalated conversations."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr
from smooth_operator.types import GeneralAgentResponse, GetMessagesResponse

from parley.escalation import FOLLOW_UP
from parley.settings import Settings
from parley.stack.fake_anthropic import FakeAnthropic, Reply, ToolCall
from parley.storage import sessions
from tests.conftest import Processes
from tests.helpers import (
    ADMIN_AUTH,
    ADMIN_TOKEN,
    GatewayServer,
    WsClient,
    collapse,
    kinds,
    run_turn,
    running_gateway,
)

REASON = "The customer disputes a charge on their card; billing must decide."


def escalate(reason: str = REASON) -> ToolCall:
    return ToolCall("escalate_to_human", {"reason": reason})


@pytest.fixture
async def admin_gateway(settings: Settings) -> AsyncIterator[GatewayServer]:
    """A gateway with the admin API on (the suite's runs without a token)."""
    async with running_gateway(
        settings.model_copy(update={"admin_token": SecretStr(ADMIN_TOKEN)})
    ) as server:
        yield server


async def org_session(client: WsClient, pool) -> tuple[str, str, dict]:
    """A session of a fresh agent in a fresh organization: (org, agent, session)."""
    org_id, agent_id = f"org-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
    async with pool.connection() as conn:
        await sessions.upsert_agent(conn, agent_id, name="Desk", org_id=org_id)
    return org_id, agent_id, await client.create_session(agent_id)


def outcome(events: list[dict]) -> dict:
    """The eventual_response's payload (`data.data`)."""
    assert events[-1]["type"] == "eventual_response", events[-1]
    return events[-1]["data"]["data"]


async def escalations_of(pool, conversation_id: str) -> list[dict]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "select org_id, agent_id, reason, status, turn_id from escalations"
            " where conversation_id = %s order by created_at",
            (conversation_id,),
        )
        return await cur.fetchall()


@pytest.mark.usefixtures("worker")
async def test_an_escalated_turn_says_so_and_marks_the_conversation(
    admin_gateway: GatewayServer, fake_model: FakeAnthropic
) -> None:
    pool = admin_gateway.services.pool
    reply = "I have passed this to our billing team: a person will follow up here."
    fake_model.enqueue(Reply(tool_calls=[escalate()]), Reply(text=reply))
    async with await WsClient.open(admin_gateway.ws_url) as client:
        org_id, agent_id, session = await org_session(client, pool)
        events = await run_turn(client, session["sessionId"], "I want my money back!", "esc")
        history = await client.request(
            {
                "action": "get_conversation_messages",
                "requestId": "h",
                "sessionId": session["sessionId"],
            }
        )

    # The tool is offered to the model, runs without an approval, and tells the model that a
    # person will follow up.
    assert "escalate_to_human" in {t["name"] for t in fake_model.requests[0].body["tools"]}
    assert collapse(kinds(events)) == [
        "immediate:202",
        "chunk:toolCall",
        "chunk:toolResult",
        "stream_token",
        "eventual_response",
    ]
    result = events[2]["data"]["state"]["rawResponse"]["toolResult"]
    assert result == {
        "name": "escalate_to_human",
        "isError": False,
        "result": {"status": "escalated", "message": FOLLOW_UP},
    }
    told = fake_model.requests[1].body["messages"][-1]["content"][0]
    assert told["type"] == "tool_result" and "a person will follow up" in told["content"]

    # The event's fields (the published client already parsed the event).
    body = outcome(events)
    assert body["needsEscalation"] is True
    assert body["escalationReason"] == REASON
    assert body["response"]["resolutionStatus"] == "requires_escalation"
    assert body["response"]["responseParts"] == [reply]
    GeneralAgentResponse.model_validate(body["response"])

    # The mark in PostgreSQL.
    [mark] = await escalations_of(pool, session["conversationId"])
    assert (mark["org_id"], mark["agent_id"], mark["reason"], mark["status"]) == (
        org_id,
        agent_id,
        REASON,
        "open",
    )

    # And the reply's record says so after a reload.
    page = GetMessagesResponse.model_validate(history["data"])
    record = page.messages[0].content.structured_response
    assert record is not None
    assert record["needsEscalation"] is True and record["escalationReason"] == REASON
    assert record["resolutionStatus"] == "requires_escalation"
    assert [c["name"] for c in record["toolCalls"]] == ["escalate_to_human"]


@pytest.mark.usefixtures("worker")
async def test_a_turn_without_escalation_is_not_flagged(
    client: WsClient, pool, fake_model: FakeAnthropic
) -> None:
    fake_model.enqueue(Reply(text="Our shop opens at nine."))
    _, _, session = await org_session(client, pool)
    events = await run_turn(client, session["sessionId"], "When do you open?", "plain")
    body = outcome(events)
    assert body["needsEscalation"] is False and "escalationReason" not in body
    assert body["response"]["resolutionStatus"] == "in_progress"
    assert await escalations_of(pool, session["conversationId"]) == []


@pytest.mark.usefixtures("worker")
async def test_the_admin_api_lists_and_resolves_escalations(
    admin_gateway: GatewayServer, fake_model: FakeAnthropic
) -> None:
    pool = admin_gateway.services.pool
    async with await WsClient.open(admin_gateway.ws_url) as client:
        org_id, agent_id, session = await org_session(client, pool)
        fake_model.enqueue(
            Reply(tool_calls=[escalate("first")]), Reply(text="A person will follow up.")
        )
        await run_turn(client, session["sessionId"], "a person, please", "e1")
        # Asked again while it is open: the conversation stays queued once, with the latest
        # reason.
        fake_model.enqueue(Reply(tool_calls=[escalate("second")]), Reply(text="Still with them."))
        again = await run_turn(client, session["sessionId"], "hello?", "e2")
        assert outcome(again)["escalationReason"] == "second"
        _, _, other = await org_session(client, pool)  # another organization's escalation
        fake_model.enqueue(Reply(tool_calls=[escalate("elsewhere")]), Reply(text="Passed on."))
        await run_turn(client, other["sessionId"], "help", "e3")

    async with httpx.AsyncClient(base_url=admin_gateway.http_url) as http:
        assert (await http.get("/admin/escalations", params={"org": org_id})).status_code == 401
        listed = await http.get("/admin/escalations", params={"org": org_id}, headers=ADMIN_AUTH)
        assert listed.status_code == 200
        [queued] = listed.json()["escalations"]
        assert listed.json()["org"] == org_id
        assert queued["conversation_id"] == session["conversationId"]
        assert (queued["org"], queued["agent_id"], queued["reason"], queued["status"]) == (
            org_id,
            agent_id,
            "second",
            "open",
        )
        assert queued["escalated_at"] and queued["resolved_at"] is None

        resolved = await http.post(
            f"/admin/escalations/{queued['id']}/resolve", params={"org": org_id}, headers=ADMIN_AUTH
        )
        assert resolved.status_code == 200
        assert resolved.json()["status"] == "resolved" and resolved.json()["resolved_at"]
        assert resolved.json()["resolved_by"] == "admin token"
        still_open = await http.get(
            "/admin/escalations", params={"org": org_id}, headers=ADMIN_AUTH
        )
        assert still_open.json()["escalations"] == []
        done = await http.get(
            "/admin/escalations", params={"org": org_id, "status": "resolved"}, headers=ADMIN_AUTH
        )
        assert [e["id"] for e in done.json()["escalations"]] == [queued["id"]]
        # Another organization's escalation is not this one's to resolve, nor a made-up id.
        foreign = await http.post(
            f"/admin/escalations/{queued['id']}/resolve",
            params={"org": "someone-else"},
            headers=ADMIN_AUTH,
        )
        assert foreign.status_code == 404
        unknown = await http.post(
            f"/admin/escalations/{uuid.uuid4()}/resolve", params={"org": org_id}, headers=ADMIN_AUTH
        )
        assert unknown.status_code == 404
        bad = await http.get(
            "/admin/escalations", params={"org": org_id, "status": "maybe"}, headers=ADMIN_AUTH
        )
        assert bad.status_code == 400


async def test_escalation_can_be_turned_off(
    isolated_settings: Settings, processes: Processes, fake_model: FakeAnthropic
) -> None:
    """PARLEY_ESCALATION=false: a deployment with no human team does not offer the tool."""
    processes.worker(isolated_settings, PARLEY_ESCALATION="false")
    fake_model.enqueue(Reply(text="Hello."))
    async with (
        running_gateway(isolated_settings) as gateway,
        await WsClient.open(gateway.ws_url) as client,
    ):
        session = await client.create_session(str(uuid.uuid4()))
        events = await run_turn(client, session["sessionId"], "hi", "off", timeout=60)
    assert events[-1]["type"] == "eventual_response"
    offered = {t["name"] for t in fake_model.requests[0].body["tools"]}
    assert "knowledge_search" in offered and "escalate_to_human" not in offered
