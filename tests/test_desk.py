"""The approvals desk: a team member (a JWT role the tool names among its approvers) decides
a parked write, from another gateway process, with edits; the same durable turn goes on."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import DictRow, dict_row
from smooth_operator.types import GetMessagesResponse

from gateway.desk_watch import MAX_WAITS_PER_PRINCIPAL
from parley.settings import Settings
from parley.stack.fake_anthropic import FakeAnthropic, Reply, ToolCall
from parley.storage import approvals, sessions
from parley.tools import TEAM_SENTENCE, ToolRegistry
from parley.widget_auth import sign_auth_context
from tests.conftest import Processes
from tests.helpers import (
    GatewayServer,
    WsClient,
    collapse,
    history_holds,
    is_terminal,
    kinds,
    running_gateway,
)
from tests.test_identity import SECRET, hs256, jwt_settings

pytestmark = pytest.mark.usefixtures("worker")

REFUND = ToolCall("team_refund", {"order_id": "ORD-77", "amount": 120})
RESUMED = ["chunk:toolResult", "stream_token", "eventual_response"]


@pytest.fixture
async def desk_gateway(settings: Settings) -> AsyncIterator[GatewayServer]:
    """The visitor's gateway, with identity on (tokens optional: not strict)."""
    async with running_gateway(jwt_settings(settings)) as server:
        yield server


@pytest.fixture
def org() -> str:
    return f"org-{uuid.uuid4().hex[:8]}"


def desk_token(org: str, sub: str = "sam", role: Any = "support") -> str:
    return hs256(sub=sub, org=org, role=role)


@asynccontextmanager
async def desk(base_url: str, token: str) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as http:
        yield http


async def ask(client: WsClient, session_id: str, request_id: str, message: str) -> None:
    """Send `message` and read the turn up to where it parks (its first stream chunk)."""
    await client.send(
        {
            "action": "send_message",
            "requestId": request_id,
            "sessionId": session_id,
            "message": message,
        }
    )
    await client.recv_until(lambda e: e["type"] == "stream_chunk")


async def park(gateway: GatewayServer, org: str, fake_model: FakeAnthropic, after: str) -> Any:
    """A visitor of `org` whose turn parks on team_refund; returns (client, session id)."""
    fake_model.enqueue(Reply(tool_calls=[REFUND]), Reply(text=after))
    client = await WsClient.open(gateway.ws_url + f"?token={hs256(sub='vera', org=org)}")
    session = await client.create_session(str(uuid.uuid4()))
    await client.send(
        {
            "action": "send_message",
            "requestId": "t1",
            "sessionId": session["sessionId"],
            "message": "Please refund 120 EUR on ORD-77, it arrived broken.",
        }
    )
    parked = await client.recv_until(lambda e: e["type"] == "stream_chunk")
    assert kinds(parked) == ["immediate:202", "write_confirmation_required", "chunk:toolCall"]
    return client, session["sessionId"], parked[1]


async def row(pool, session_id: str) -> dict:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "select * from approvals where session_id = %s order by created_at", (session_id,)
        )
        return (await cur.fetchall())[-1]


async def execution(pool, turn_id: str) -> dict | None:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "select tool_name, arguments, decision_hash from tool_executions"
            " where workflow_id = %s",
            (turn_id,),
        )
        return await cur.fetchone()


async def refunds(pool, order_id: str) -> list[str]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "select reason from demo_refunds where order_id = %s order by id", (order_id,)
        )
        return [r["reason"] for r in await cur.fetchall()]


async def test_a_team_members_decision_from_another_process_resumes_the_visitors_turn(
    desk_gateway: GatewayServer,
    settings: Settings,
    processes: Processes,
    fake_model: FakeAnthropic,
    org: str,
    pool,
) -> None:
    before = await refunds(pool, "ORD-77")
    client, session_id, ask = await park(desk_gateway, org, fake_model, "Refund issued.")
    sentence = "Refund 120 EUR on order ORD-77"
    assert ask["data"]["data"] == {
        "toolId": "team_refund",
        "actionDescription": TEAM_SENTENCE.format(sentence=sentence),
    }
    # The visitor cannot approve their own refund; the turn stays parked.
    refused = await client.request(
        {
            "action": "confirm_tool_action",
            "requestId": "c1",
            "sessionId": session_id,
            "approved": True,
        }
    )
    assert refused["type"] == "error"
    assert refused["error"]["code"] == "NOT_AUTHORIZED_TO_APPROVE"
    pending = await row(pool, session_id)
    assert pending["decision"] is None and pending["approvers"] == ["support", "manager"]
    assert pending["org_id"] == org and pending["description"] == sentence

    _, port = await processes.gateway(
        settings, PARLEY_AUTH="jwt", PARLEY_JWT_SECRET=SECRET, **_jwt_env()
    )
    other = f"http://127.0.0.1:{port}"
    # Who may see it: a role the tool names, in the visitor's organization.
    async with desk(other, desk_token(org, role=None)) as nobody:
        assert (await nobody.get("/api/approvals?status=pending")).status_code == 403
    async with desk(other, desk_token(f"{org}-other")) as stranger:
        listed = (await stranger.get("/api/approvals?status=pending")).json()
        assert listed["approvals"] == []
        outside = await stranger.post(
            f"/api/approvals/{pending['id']}/decision", json={"approved": True}
        )
        assert outside.status_code == 404
    async with desk(other, desk_token(org, role="billing")) as wrong_role:
        assert (await wrong_role.get("/api/approvals")).json()["approvals"] == []
    async with httpx.AsyncClient(base_url=other) as anonymous:
        assert (await anonymous.get("/api/approvals")).status_code == 401

    async with desk(other, desk_token(org)) as http:
        listed = (await http.get("/api/approvals?status=pending")).json()
        [item] = listed["approvals"]
        assert item["id"] == str(pending["id"]) and item["tool"] == "team_refund"
        assert item["sentence"] == sentence and item["arguments"] == REFUND.input
        assert item["requester"]["userId"] == "vera"
        assert item["excerpt"][-1]["role"] == "user"
        assert "arrived broken" in item["excerpt"][-1]["text"]
        assert item["deadline"] > item["requestedAt"]
        assert (await refunds(pool, "ORD-77")) == before  # nothing ran yet

        decided = await http.post(
            f"/api/approvals/{item['id']}/decision",
            json={"approved": True, "note": "checked the photos"},
        )
        assert decided.status_code == 200, decided.text
        assert decided.json()["decision"] == "approved" and decided.json()["edited"] is False
        assert decided.headers["cache-control"] == "no-store"

        # The visitor's open socket sees the rest of the same turn.
        events = await client.recv_until(is_terminal("t1"))
        assert collapse(kinds(events)) == RESUMED
        result = events[0]["data"]["state"]["rawResponse"]["toolResult"]
        assert result["isError"] is False and result["result"]["refunded"] == 120
        assert (await refunds(pool, "ORD-77")) == [*before, "team:120"]

        done = await row(pool, session_id)
        assert done["decision"] == "approved" and done["decided_by"].startswith("sam ")
        assert done["note"] == "checked the photos" and done["delivered_at"] is not None
        # Decided once: a second decision and the visitor's confirm both find nothing.
        again = await http.post(f"/api/approvals/{item['id']}/decision", json={"approved": False})
        assert again.status_code == 409
        assert (await http.get("/api/approvals")).json()["approvals"] == []
    await client.close()


def _jwt_env() -> dict[str, str]:
    from tests.test_identity import AUDIENCE, ISSUER

    return {"PARLEY_JWT_ISSUER": ISSUER, "PARLEY_JWT_AUDIENCE": AUDIENCE}


async def test_edited_arguments_are_validated_then_run_exactly_as_approved(
    desk_gateway: GatewayServer, fake_model: FakeAnthropic, org: str, pool
) -> None:
    client, session_id, _ = await park(desk_gateway, org, fake_model, "Done, 80 EUR refunded.")
    pending = await row(pool, session_id)
    url = f"/api/approvals/{pending['id']}/decision"
    async with desk(desk_gateway.http_url, desk_token(org, sub="max", role="manager")) as http:
        for bad, field in [
            ({"order_id": "ORD-77", "amount": 9000}, "amount"),
            ({"order_id": "ORD-77", "amount": "80"}, "amount"),
            ({"order_id": "nope", "amount": 80}, "order_id"),
            ({"amount": 80}, ""),
        ]:
            refused = await http.post(url, json={"approved": True, "arguments": bad})
            assert refused.status_code == 422, bad
            assert field in [e["field"] for e in refused.json()["errors"]]
        shape = await http.post(url, json={"approved": "yes"})
        assert shape.status_code == 400
        assert (await row(pool, session_id))["decision"] is None  # nothing decided

        edited = {"order_id": "ORD-77", "amount": 80}
        decided = await http.post(
            url, json={"approved": True, "arguments": edited, "note": "partial: one item"}
        )
        assert decided.status_code == 200, decided.text
        body = decided.json()
        assert body["edited"] is True and body["arguments"] == edited

    events = await client.recv_until(is_terminal("t1"))
    assert collapse(kinds(events)) == RESUMED
    await client.close()
    # The tool ran with exactly the approved arguments, once.
    assert (await refunds(pool, "ORD-77"))[-1] == "team:80"
    audit = await row(pool, session_id)
    assert audit["arguments"] == REFUND.input  # what was asked
    assert audit["approved_arguments"] == edited  # what was approved
    assert audit["note"] == "partial: one item" and audit["decided_by"].startswith("max ")
    assert audit["description"] == "Refund 80 EUR on order ORD-77"  # the sentence, rebuilt
    executed = await execution(pool, audit["turn_id"])
    assert executed is not None and executed["arguments"] == edited
    assert executed["decision_hash"] == audit["decision_hash"] == body["decisionHash"]
    assert audit["decision_hash"] == approvals.decision_hash(
        approval_id=str(audit["id"]),
        tool_name="team_refund",
        requested=REFUND.input,
        approved_arguments=edited,
        decision="approved",
        decided_by=audit["decided_by"],
        note="partial: one item",
    )
    # The model is told the arguments changed, and how.
    told = fake_model.requests[-1].body["messages"][-1]["content"][0]
    assert "changed its arguments" in told["content"] and "amount: 120 -> 80" in told["content"]
    assert "partial: one item" in told["content"]


async def test_two_approvers_at_once_exactly_one_wins(
    desk_gateway: GatewayServer, fake_model: FakeAnthropic, org: str, pool
) -> None:
    before = await refunds(pool, "ORD-77")
    client, session_id, _ = await park(desk_gateway, org, fake_model, "Handled.")
    pending = await row(pool, session_id)
    url = f"/api/approvals/{pending['id']}/decision"
    async with (
        desk(desk_gateway.http_url, desk_token(org, sub="ann")) as ann,
        desk(desk_gateway.http_url, desk_token(org, sub="bob", role="manager")) as bob,
    ):
        answers = await asyncio.gather(
            *[
                who.post(url, json={"approved": verdict})
                for _ in range(4)
                for who, verdict in ((ann, True), (bob, False))
            ]
        )
    statuses = sorted(a.status_code for a in answers)
    assert statuses.count(200) == 1 and set(statuses) <= {200, 404, 409}
    [winner] = [a.json() for a in answers if a.status_code == 200]
    events = await client.recv_until(is_terminal("t1"))
    await client.close()
    result = events[0]["data"]["state"]["rawResponse"]["toolResult"]
    decided = await row(pool, session_id)
    assert decided["decision"] == winner["decision"]
    assert result["isError"] is (winner["decision"] == "denied")
    ran = len(await refunds(pool, "ORD-77")) - len(before)
    assert ran == (1 if winner["decision"] == "approved" else 0)


async def test_a_tool_the_visitor_or_a_manager_may_approve(
    desk_gateway: GatewayServer, fake_model: FakeAnthropic, org: str, pool
) -> None:
    fake_model.enqueue(
        Reply(tool_calls=[ToolCall("shared_cancel", {"order_id": "ORD-5"})]), Reply(text="Ok.")
    )
    async with await WsClient.open(desk_gateway.ws_url + f"?token={hs256(org=org)}") as client:
        session = await client.create_session(str(uuid.uuid4()))
        await client.send(
            {
                "action": "send_message",
                "requestId": "s1",
                "sessionId": session["sessionId"],
                "message": "cancel ORD-5",
            }
        )
        parked = await client.recv_until(lambda e: e["type"] == "stream_chunk")
        sentence = parked[1]["data"]["data"]["actionDescription"]
        assert not sentence.startswith("Waiting for a team member")
        async with desk(desk_gateway.http_url, desk_token(org, role="manager")) as http:
            [item] = (await http.get("/api/approvals")).json()["approvals"]
            assert item["tool"] == "shared_cancel"
        await client.send(
            {
                "action": "confirm_tool_action",
                "requestId": "c",
                "sessionId": session["sessionId"],
                "approved": True,
            }
        )
        events = await client.recv_until(is_terminal("s1"))
        assert kinds(events)[0] == "immediate:200"


async def park_hasty(
    gateway: GatewayServer, org: str, fake_model: FakeAnthropic, tool: str = "hasty_refund"
) -> Any:
    fake_model.enqueue(Reply(tool_calls=[ToolCall(tool, {"order_id": "ORD-9"})]), Reply(text="So."))
    client = await WsClient.open(gateway.ws_url + f"?token={hs256(sub='vic', org=org)}")
    session = await client.create_session(str(uuid.uuid4()))
    await client.send(
        {
            "action": "send_message",
            "requestId": "h1",
            "sessionId": session["sessionId"],
            "message": "Refund ORD-9",
        }
    )
    parked = await client.recv_until(lambda e: e["type"] == "stream_chunk")
    assert kinds(parked) == ["immediate:202", "write_confirmation_required", "chunk:toolCall"]
    return client, session["sessionId"]


async def test_a_tools_own_timeout_expires_it_as_an_expiry_not_a_denial(
    desk_gateway: GatewayServer, fake_model: FakeAnthropic, org: str, pool
) -> None:
    client, session_id = await park_hasty(desk_gateway, org, fake_model)
    asked = await row(pool, session_id)
    # The tool's 2 s, not PARLEY_APPROVAL_TIMEOUT's 30 minutes.
    assert (asked["deadline"] - asked["created_at"]).total_seconds() < 10
    events = await client.recv_until(is_terminal("h1"), timeout=60)
    await client.close()
    assert collapse(kinds(events)) == RESUMED
    result = events[0]["data"]["state"]["rawResponse"]["toolResult"]
    assert result["isError"] is True
    assert "expired" in result["result"] and "declined" not in result["result"]
    expired = await row(pool, session_id)
    assert expired["decision"] == "expired" and expired["decided_by"] == "timeout"
    told = fake_model.requests[-1].body["messages"][-1]["content"][0]
    assert "expired" in told["content"]


async def test_the_desk_extends_a_deadline_past_the_tools_timeout(
    desk_gateway: GatewayServer, fake_model: FakeAnthropic, org: str, pool
) -> None:
    client, session_id = await park_hasty(desk_gateway, org, fake_model)
    asked = await row(pool, session_id)
    async with desk(desk_gateway.http_url, desk_token(org)) as http:
        bad = await http.post(f"/api/approvals/{asked['id']}/extend", json={"seconds": 0})
        assert bad.status_code == 400
        extended = await http.post(f"/api/approvals/{asked['id']}/extend", json={"seconds": 600})
        assert extended.status_code == 200, extended.text
        moved = await row(pool, session_id)
        assert (moved["deadline"] - asked["deadline"]).total_seconds() == 600
        # The turn's first timer (the tool's 2 s) fires; the approval is still pending.
        handle = desk_gateway.services.temporal.get_workflow_handle(asked["turn_id"])
        async with asyncio.timeout(30):
            while not any(
                e.HasField("timer_fired_event_attributes")
                for e in (await handle.fetch_history()).events
            ):
                await asyncio.sleep(0.2)
        assert (await row(pool, session_id))["decision"] is None
        [item] = (await http.get("/api/approvals")).json()["approvals"]
        assert item["deadline"] == moved["deadline"].isoformat()
        decided = await http.post(f"/api/approvals/{asked['id']}/decision", json={"approved": True})
        assert decided.status_code == 200
    events = await client.recv_until(is_terminal("h1"))
    await client.close()
    result = events[0]["data"]["state"]["rawResponse"]["toolResult"]
    assert result["isError"] is False and result["result"]["refunded"] is True
    assert (await row(pool, session_id))["decision"] == "approved"


async def test_a_later_deadline_in_the_database_outlives_the_turns_timer(
    desk_gateway: GatewayServer, fake_model: FakeAnthropic, org: str, pool
) -> None:
    """An extension whose signal has not reached the turn (here: the row moved by hand, so
    no signal and no reconciler) must not be expired at the turn's old deadline."""
    client, session_id = await park_hasty(desk_gateway, org, fake_model)
    asked = await row(pool, session_id)
    async with pool.connection() as conn:
        await conn.execute(
            "update approvals set deadline = deadline + interval '10 minutes' where id = %s",
            (asked["id"],),
        )
    # The tool's 2 s timer fires, the expiry finds the later deadline, and the turn waits
    # again: a second approval timer starts after the expiry's activity.
    handle = desk_gateway.services.temporal.get_workflow_handle(asked["turn_id"])
    await history_holds(handle, "timer_started_event_attributes", 2)
    waiting = await row(pool, session_id)
    assert waiting["decision"] is None and waiting["deadline"] > asked["deadline"]
    async with desk(desk_gateway.http_url, desk_token(org)) as http:
        decided = await http.post(f"/api/approvals/{asked['id']}/decision", json={"approved": True})
        assert decided.status_code == 200, decided.text
    events = await client.recv_until(is_terminal("h1"))
    await client.close()
    result = events[0]["data"]["state"]["rawResponse"]["toolResult"]
    assert result["isError"] is False and result["result"]["refunded"] is True
    assert (await row(pool, session_id))["decision"] == "approved"


def test_the_tool_api_checks_approvers_and_timeouts() -> None:
    registry = ToolRegistry()
    schema = {"type": "object", "properties": {}}
    made = registry.register(
        "t", "d", schema, lambda a: 1, write=True, approvers=["support"], approval_timeout=90
    )
    assert made.approvers == ("support",) and made.approval_timeout == timedelta(seconds=90)
    assert registry.register("v", "d", schema, lambda a: 1, write=True).approvers == ("visitor",)
    for bad in ([], [""], "support", ["x" * 200]):
        with pytest.raises((ValueError, TypeError)):
            registry.register("b", "d", schema, lambda a: 1, approvers=bad)
    for timeout in (0, -1, timedelta(days=31)):
        with pytest.raises(ValueError):
            registry.register("b", "d", schema, lambda a: 1, approval_timeout=timeout)


async def test_a_visitor_who_left_finds_the_decided_turn_on_their_next_visit(
    desk_gateway: GatewayServer, fake_model: FakeAnthropic, org: str, pool
) -> None:
    client, session_id, _ = await park(desk_gateway, org, fake_model, "Refunded while away.")
    await client.close()  # the visitor leaves while the turn is parked
    pending = await row(pool, session_id)
    async with desk(desk_gateway.http_url, desk_token(org)) as http:
        decided = await http.post(
            f"/api/approvals/{pending['id']}/decision", json={"approved": True}
        )
        assert decided.status_code == 200
    handle = desk_gateway.services.temporal.get_workflow_handle(pending["turn_id"])
    assert (await handle.result())["status"] == "completed"
    token = hs256(sub="vera", org=org)
    async with await WsClient.open(desk_gateway.ws_url + f"?token={token}") as again:
        reply = await again.request(
            {"action": "get_conversation_messages", "requestId": "h", "sessionId": session_id}
        )
    page = GetMessagesResponse.model_validate(reply["data"])
    newest = page.messages[0]
    assert newest.direction == "outbound" and newest.content.text == "Refunded while away."
    shown = newest.content.structured_response
    assert shown is not None
    assert [d["outcome"] for d in shown["decisions"]] == ["approved"]


async def test_without_identity_the_desk_api_does_not_exist(gateway: GatewayServer) -> None:
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        assert (await http.get("/api/approvals")).status_code == 404
        decision = await http.post(f"/api/approvals/{uuid.uuid4()}/decision", json={})
        assert decision.status_code == 404


async def test_the_desk_page_and_api_send_strict_headers(
    desk_gateway: GatewayServer, org: str
) -> None:
    """The page runs only its own files (no inline script or style), is never framed and
    sends no referrer; no API answer (approvals, arguments, excerpts) is cached."""
    async with httpx.AsyncClient(base_url=desk_gateway.http_url) as http:
        page = await http.get("/desk")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        for directive in (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ):
            assert directive in policy
        assert "unsafe" not in policy
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["referrer-policy"] == "no-referrer"
        assert "<script>" not in page.text and "<style" not in page.text
        assert not re.search(r"\s(style|on[a-z]+)\s*=", page.text)  # no inline attributes
        for name, kind in (("desk.js", "text/javascript"), ("desk.css", "text/css")):
            asset = await http.get(f"/static/{name}")
            assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
            assert f"/static/{name}" in page.text
        assert (await http.get("/api/approvals")).headers["cache-control"] == "no-store"
    async with desk(desk_gateway.http_url, desk_token(org)) as http:
        answers = [
            await http.get("/api/approvals?status=pending"),
            await http.get("/api/approvals?status=decided"),
            await http.post(f"/api/approvals/{uuid.uuid4()}/decision", json={"approved": True}),
            await http.post(f"/api/approvals/{uuid.uuid4()}/extend", json={"seconds": 60}),
        ]
        assert [a.status_code for a in answers] == [200, 400, 404, 404]
        assert all(a.headers["cache-control"] == "no-store" for a in answers)


async def waiting(gateway: GatewayServer, count: int) -> None:
    """Until `count` desk polls wait on this gateway (each subscribed to its org's changes)."""
    async with asyncio.timeout(10):
        while gateway.services.approval_watch.waiting() != count:
            await asyncio.sleep(0.02)


async def test_a_long_poll_answers_when_the_pending_set_changes(
    desk_gateway: GatewayServer, fake_model: FakeAnthropic, org: str, pool
) -> None:
    """`wait`+`since` answer when an approval is asked, extended or decided (woken by
    PostgreSQL NOTIFY while waiting, not by a timer), and after `wait` when nothing did."""
    async with (
        desk(desk_gateway.http_url, desk_token(org)) as http,
        desk(desk_gateway.http_url, desk_token(org, sub="kim")) as kim,
    ):
        empty = (await http.get("/api/approvals?status=pending")).json()
        assert empty["approvals"] == [] and empty["version"]
        quiet = await http.get(f"/api/approvals?wait=1&since={empty['version']}")
        assert quiet.json()["version"] == empty["version"]  # nothing changed: after 1 s

        async def poll(since: str) -> dict[str, Any]:
            started = asyncio.get_running_loop().time()
            answer = await http.get(f"/api/approvals?status=pending&wait=25&since={since}")
            assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
            assert asyncio.get_running_loop().time() - started < 20  # woken, not timed out
            return answer.json()

        asked = asyncio.create_task(poll(empty["version"]))
        await waiting(desk_gateway, 1)
        client, session_id, _ = await park(desk_gateway, org, fake_model, "Refunded.")
        listed = await asked
        [item] = listed["approvals"]
        assert item["id"] == str((await row(pool, session_id))["id"])
        assert listed["version"] != empty["version"]

        extended = asyncio.create_task(poll(listed["version"]))
        await waiting(desk_gateway, 1)
        url = f"/api/approvals/{item['id']}"
        assert (await kim.post(f"{url}/extend", json={"seconds": 60})).status_code == 200
        later = await extended
        assert later["approvals"][0]["deadline"] > item["deadline"]

        decided = asyncio.create_task(poll(later["version"]))
        await waiting(desk_gateway, 1)
        assert (await kim.post(f"{url}/decision", json={"approved": True})).status_code == 200
        assert (await decided)["approvals"] == []
        await client.recv_until(is_terminal("t1"))
        await client.close()


async def test_long_polls_are_bounded_per_principal_and_freed_when_the_caller_leaves(
    desk_gateway: GatewayServer, org: str
) -> None:
    async with desk(desk_gateway.http_url, desk_token(org)) as http:
        version = (await http.get("/api/approvals")).json()["version"]
        for bad in ("wait=soon", "wait=-1", "since=..%2f", f"since={'a' * 65}"):
            refused = await http.get(f"/api/approvals?{bad}")
            assert refused.status_code == 400 and refused.headers["cache-control"] == "no-store"
        polls = [
            asyncio.create_task(http.get(f"/api/approvals?wait=25&since={version}"))
            for _ in range(MAX_WAITS_PER_PRINCIPAL)
        ]
        await waiting(desk_gateway, MAX_WAITS_PER_PRINCIPAL)
        over = await http.get(f"/api/approvals?wait=25&since={version}")
        assert over.status_code == 429 and over.headers["retry-after"] == "5"
        assert "too many" in over.json()["error"]
        async with desk(desk_gateway.http_url, desk_token(org, sub="kim")) as kim:
            other = asyncio.create_task(kim.get(f"/api/approvals?wait=1&since={version}"))
            assert (await other).status_code == 200  # another principal is not held back
        for task in polls:
            task.cancel()
        await asyncio.gather(*polls, return_exceptions=True)
    # The callers hung up: their waits end and free their places without waiting 25 s.
    await waiting(desk_gateway, 0)


async def test_a_team_member_does_not_approve_their_own_request(
    desk_gateway: GatewayServer, fake_model: FakeAnthropic, org: str, pool
) -> None:
    fake_model.enqueue(Reply(tool_calls=[REFUND]), Reply(text="Declined by a colleague."))
    own = hs256(sub="sam", org=org, role="support")  # a support agent chatting as a visitor
    async with await WsClient.open(desk_gateway.ws_url + f"?token={own}") as client:
        session = await client.create_session(str(uuid.uuid4()))
        await ask(client, session["sessionId"], "t1", "refund my own order")
        pending = await row(pool, session["sessionId"])
        await refused_to_the_requester(desk_gateway, pool, own, pending)
        url = f"/api/approvals/{pending['id']}/decision"
        async with desk(desk_gateway.http_url, desk_token(org, sub="kim")) as colleague:
            [item] = (await colleague.get("/api/approvals")).json()["approvals"]
            assert item["ownRequest"] is False
            assert (await colleague.post(url, json={"approved": False})).status_code == 200
        events = await client.recv_until(is_terminal("t1"))
        assert collapse(kinds(events)) == RESUMED


async def refused_to_the_requester(
    gateway: GatewayServer, pool, token: str, pending: dict[str, Any]
) -> None:
    """The requester sees their approval marked as their own, and can neither decide nor
    extend it (403, nothing changed); nor can the statements themselves be made to."""
    async with desk(gateway.http_url, token) as http:
        [item] = (await http.get("/api/approvals")).json()["approvals"]
        assert item["id"] == str(pending["id"]) and item["ownRequest"] is True
        url = f"/api/approvals/{pending['id']}"
        refused = await http.post(f"{url}/decision", json={"approved": True})
        assert refused.status_code == 403 and "own request" in refused.json()["error"]
        longer = await http.post(f"{url}/extend", json={"seconds": 600})
        assert longer.status_code == 403 and "own request" in longer.json()["error"]
    unchanged = await row(pool, pending["session_id"])
    assert unchanged["decision"] is None and unchanged["deadline"] == pending["deadline"]
    async with pool.connection() as conn:
        aid, org = str(pending["id"]), pending["org_id"]
        assert await approvals.extend(conn, aid, org, ["support"], 60, subject="sam") is None
        claimed = await approvals.claim_at_desk(
            conn,
            aid,
            org,
            ["support"],
            approved=True,
            decided_by="sam (support)",
            arguments=None,
            note=None,
            binding="x",
            subject="sam",
        )
        assert claimed is None
    assert (await row(pool, pending["session_id"]))["decision"] is None


async def test_a_visitor_verified_by_auth_context_does_not_approve_their_own_request(
    desk_gateway: GatewayServer, fake_model: FakeAnthropic, org: str, pool
) -> None:
    """The requester is the session's verified user id, not only a token's owner: a support
    agent who chats through a site's widget (a signed authContext) is still themselves."""
    agent, key = f"agent-{org}", "desk-signing-key"
    async with pool.connection() as conn:
        await sessions.upsert_agent(
            conn, agent, name="Shop", org_id=org, allowed_origins=["*"], auth_key=key
        )
    fake_model.enqueue(Reply(tool_calls=[REFUND]), Reply(text="A colleague approved it."))
    now = int(time.time())
    context = {"userId": "sam", "timestamp": now, "signature": sign_auth_context(key, "sam", now)}
    headers = {"Origin": "https://shop.test"}
    async with await WsClient.open(desk_gateway.ws_url, additional_headers=headers) as client:
        session = await client.create_session(agent, authContext=context)
        await ask(client, session["sessionId"], "t1", "refund my own order")
        pending = await row(pool, session["sessionId"])
        assert pending["org_id"] == org
        await refused_to_the_requester(desk_gateway, pool, desk_token(org, sub="sam"), pending)
        # The same user id in another organization is somebody else.
        async with desk(desk_gateway.http_url, desk_token(f"{org}-x", sub="sam")) as other:
            assert (await other.get("/api/approvals")).json()["approvals"] == []
        url = f"/api/approvals/{pending['id']}/decision"
        async with desk(desk_gateway.http_url, desk_token(org, sub="kim")) as colleague:
            assert (await colleague.post(url, json={"approved": True})).status_code == 200
        events = await client.recv_until(is_terminal("t1"))
        assert collapse(kinds(events)) == RESUMED


async def test_an_extension_whose_gateway_died_before_the_signal_is_retold(
    desk_gateway: GatewayServer, fake_model: FakeAnthropic, org: str, pool
) -> None:
    client, session_id = await park_hasty(desk_gateway, org, fake_model, "patient_refund")
    asked = await row(pool, session_id)
    # What a gateway that died between the UPDATE and the signal leaves behind.
    async with pool.connection() as conn:
        extended = await approvals.extend(
            conn, str(asked["id"]), org, ["support"], 600, subject="kim"
        )
    assert extended is not None
    # The reconciler tells the turn: its extension is marked delivered...
    async with asyncio.timeout(20):
        while (await row(pool, session_id))["extension_delivered_at"] is None:
            await asyncio.sleep(0.2)
    # ...so after the tool's 6 s timer fired, the approval still waits, and can be approved.
    handle = desk_gateway.services.temporal.get_workflow_handle(asked["turn_id"])
    async with asyncio.timeout(30):
        while not any(
            e.HasField("timer_fired_event_attributes")
            for e in (await handle.fetch_history()).events
        ):
            await asyncio.sleep(0.2)
    async with desk(desk_gateway.http_url, desk_token(org)) as http:
        decided = await http.post(f"/api/approvals/{asked['id']}/decision", json={"approved": True})
        assert decided.status_code == 200
    events = await client.recv_until(is_terminal("h1"))
    await client.close()
    assert events[0]["data"]["state"]["rawResponse"]["toolResult"]["isError"] is False


# QA's long content: a 7,500-character visitor message, with a 300-character URL and a
# 200-character word in its first 500 characters (the part the desk shows).
LONG_WORD = "W" * 200
LONG_URL = "https://shop.example.com/" + "p" * 275
LONG_MESSAGE = (f"Broken: {LONG_WORD} see {LONG_URL} " + "my blender arrived broken. " * 300)[:7500]


async def park_message(
    gateway: GatewayServer, org: str, fake_model: FakeAnthropic, message: str, **claims: Any
) -> tuple[WsClient, str]:
    """A visitor of `org` (`claims`: the token's, e.g. a `name`) whose `message` parks a turn
    on `call` (default REFUND); returns (client, session id). The turn stays parked."""
    call = claims.pop("call", REFUND)
    fake_model.enqueue(Reply(tool_calls=[call]))
    token = hs256(sub=claims.pop("sub", "vera"), org=org, **claims)
    client = await WsClient.open(gateway.ws_url + f"?token={token}")
    session = await client.create_session(str(uuid.uuid4()))
    await ask(client, session["sessionId"], "t1", message)
    return client, session["sessionId"]


async def decline_all(
    http: httpx.AsyncClient, fake_model: FakeAnthropic, parked: list[tuple[WsClient, str]]
) -> None:
    """Decline each parked turn at the desk and read it to its end (no turn outlives its
    test), then close its client."""
    listed = (await http.get("/api/approvals?status=pending")).json()["approvals"]
    assert len(listed) == len(parked)
    for item in listed:
        fake_model.enqueue(Reply(text="Declined, sorry."))
        decided = await http.post(f"/api/approvals/{item['id']}/decision", json={"approved": False})
        assert decided.status_code == 200, decided.text
    for client, _ in parked:
        await client.recv_until(is_terminal("t1"))
        await client.close()


class CountingCursor(psycopg.AsyncCursor[DictRow]):
    """A real cursor that also notes every statement it runs (what a listing costs)."""

    statements: list[str] = []

    async def execute(self, query: Any, *args: Any, **kwargs: Any) -> CountingCursor:
        CountingCursor.statements.append(str(query))
        await super().execute(query, *args, **kwargs)
        return self


async def test_the_listing_shortens_excerpts_and_reads_them_in_one_statement(
    desk_gateway: GatewayServer, settings: Settings, fake_model: FakeAnthropic, org: str, pool
) -> None:
    """Each excerpt message is cut to 500 characters and flagged `truncated` (with its full
    `length`), at most the last 6 messages; a page of approvals costs two statements (the
    approvals, then every excerpt at once), not one more per approval."""
    parked = [
        await park_message(desk_gateway, org, fake_model, text)
        for text in (LONG_MESSAGE, "Refund ORD-77, please.", "Refund ORD-77 again.")
    ]
    try:
        # The third conversation goes on for 8 more messages: only its last 6 are shown.
        async with pool.connection() as conn:
            cur = await conn.execute(
                "select conversation_id from sessions where id = %s", (parked[2][1],)
            )
            conversation = (await cur.fetchone())["conversation_id"]
            for n in range(8):
                await conn.execute(
                    "insert into messages (id, conversation_id, direction, text)"
                    " values (%s, %s, %s, %s)",
                    (uuid.uuid4(), conversation, ("inbound", "outbound")[n % 2], f"later {n}"),
                )

        async with desk(desk_gateway.http_url, desk_token(org)) as http:
            listed = (await http.get("/api/approvals?status=pending")).json()["approvals"]
        assert len(listed) == 3
        by_session = {
            str(r["session_id"]): str(r["id"])
            for r in [await row(pool, session_id) for _, session_id in parked]
        }
        excerpts = {item["id"]: item["excerpt"] for item in listed}
        [long] = excerpts[by_session[parked[0][1]]]
        assert long["role"] == "user" and long["truncated"] is True and long["length"] == 7500
        assert long["text"] == LONG_MESSAGE[:500].rstrip() + "\u2026"
        assert LONG_URL[:100] in long["text"]
        [short] = excerpts[by_session[parked[1][1]]]
        assert short["text"] == "Refund ORD-77, please." and short["truncated"] is False
        assert short["length"] == len("Refund ORD-77, please.")
        capped = excerpts[by_session[parked[2][1]]]
        assert [m["text"] for m in capped] == [f"later {n}" for n in range(2, 8)]
        assert [m["role"] for m in capped] == ["user", "assistant"] * 3

        # The same listing through a connection that counts what it runs.
        CountingCursor.statements = []
        async with await psycopg.AsyncConnection.connect(
            settings.database_url or "", row_factory=dict_row, cursor_factory=CountingCursor
        ) as conn:
            found = await approvals.pending_for(conn, org, ["support"])
        assert [p.excerpt for p in found] == [excerpts[p.id] for p in found]
        assert len(found) == 3 and len(CountingCursor.statements) == 2, CountingCursor.statements
    finally:  # a parked turn would hold up the gateway's shutdown
        async with desk(desk_gateway.http_url, desk_token(org, sub="kim")) as http:
            await decline_all(http, fake_model, parked)
