"""Capabilities never reach an operator's eyes: a session id and a connection's token appear
in no log line of the gateway or the worker (at DEBUG), and in no Temporal workflow id."""

from __future__ import annotations

import time
import uuid

import jwt
import pytest

from parley.stack.fake_anthropic import FakeAnthropic, Reply, ToolCall
from tests.helpers import WsClient, is_terminal

SECRET = "log-test-secret-of-a-decent-length-000"
REFUND = ToolCall("issue_refund", {"order_id": "ORD-7777", "reason": "damaged"})
ASK_CONTACT = ToolCall("request_identity_intake", {"fields": ["email"], "reason": "to reply"})
VISITOR_EMAIL = "dana.private@example.com"
VISITOR_TYPO = "dana.private@"


@pytest.mark.timeout(180)
async def test_no_session_id_or_token_in_logs_or_workflow_ids(
    isolated_settings, processes, fake_model: FakeAnthropic, temporal_env
) -> None:
    env = {"PARLEY_LOG_LEVEL": "DEBUG", "PARLEY_AUTH": "jwt", "PARLEY_JWT_SECRET": SECRET}
    worker = processes.worker(isolated_settings, capture=True, **env)
    gateway, port = await processes.gateway(isolated_settings, capture=True, **env)
    now = int(time.time())
    token = jwt.encode({"sub": "dana", "org": "acme", "exp": now + 300}, SECRET, "HS256")
    url = f"ws://127.0.0.1:{port}/ws"
    sessions: list[str] = []
    async with await WsClient.open(f"{url}?token={token}") as owner:
        session = (await owner.create_session("support", supports=["identity_form"]))["sessionId"]
        anonymous = await WsClient.open(url)
        bearer = (await anonymous.create_session("support"))["sessionId"]
        sessions += [session, bearer]
        # A turn that parks, is approved and completes; one that is cancelled; a resume;
        # a stranger's attempts; history pages.
        fake_model.enqueue(Reply(tool_calls=[REFUND]), Reply(text="Done."))
        await owner.send(
            {"action": "send_message", "requestId": "r1", "sessionId": session, "message": "hi"}
        )
        await owner.recv_until(lambda e: e["type"] == "write_confirmation_required", 60)
        await owner.send(
            {
                "action": "confirm_tool_action",
                "requestId": "c1",
                "sessionId": session,
                "approved": True,
            }
        )
        await owner.recv_until(is_terminal("r1"), 60)
        # A form the visitor fills in: what they typed stays out of the logs too.
        fake_model.enqueue(Reply(tool_calls=[ASK_CONTACT]), Reply(text="Thanks."))
        await owner.send(
            {"action": "send_message", "requestId": "r3", "sessionId": session, "message": "hi"}
        )
        parked = await owner.recv_until(lambda e: e["type"] == "stream_chunk", 60)
        asked = parked[-2]
        assert asked["type"] == "interaction_required"
        answer = {
            "action": "submit_interaction",
            "requestId": "r3",
            "sessionId": session,
            "interactionId": asked["data"]["data"]["interactionId"],
        }
        invalid = await owner.request({**answer, "values": {"email": VISITOR_TYPO}}, timeout=30)
        assert invalid["type"] == "interaction_invalid"
        await owner.send({**answer, "values": {"email": VISITOR_EMAIL}})
        await owner.recv_until(is_terminal("r3"), 60)
        fake_model.enqueue(Reply(text="A long answer " * 50, delay=0.05))
        await owner.send(
            {"action": "send_message", "requestId": "r2", "sessionId": session, "message": "more"}
        )
        await owner.recv_until(lambda e: e["type"] == "stream_token", 60)
        await owner.send({"action": "cancel", "requestId": "r2", "sessionId": session})
        await owner.recv_until(is_terminal("r2"), 60)
        for frame in (
            {"action": "resume_turn", "requestId": "r2", "sessionId": session},
            {"action": "get_conversation_messages", "requestId": "m", "sessionId": session},
            {"action": "get_session", "requestId": "g", "sessionId": bearer},
        ):
            await anonymous.request(frame, timeout=30)
        anonymous.ws.transport.abort()
    turn_ids = [
        w.id
        async for w in temporal_env.client.list_workflows(
            f"TaskQueue = '{isolated_settings.task_queue}'"
        )
    ]
    processes.stop_all()
    logs = worker.output + gateway.output
    assert "turn started" in logs and "approval decided" in logs  # DEBUG logs were read
    assert "interaction answered" in logs
    assert len(turn_ids) == 3
    for secret in (*sessions, token, token.split(".")[2], VISITOR_EMAIL, VISITOR_TYPO):
        assert secret not in logs
        assert not any(secret in turn_id for turn_id in turn_ids)
    assert uuid.UUID(sessions[0])  # (they were real ids)
