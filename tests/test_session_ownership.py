"""Sessions that belong to someone: a principal's session answers a stranger exactly as an
unknown session does, for every action; anonymous sessions are bearer capabilities; every
session expires."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from pydantic import SecretStr

from parley.stack.fake_anthropic import FakeAnthropic, Reply, ToolCall
from tests.helpers import WsClient, is_terminal, kinds, running_gateway, tokens

pytestmark = pytest.mark.usefixtures("worker")

SECRET = "ownership-test-secret-of-a-decent-length"
REFUND = ToolCall("issue_refund", {"order_id": "ORD-4242", "reason": "damaged"})

Frame = Callable[[str], dict[str, Any]]

# Every action addressed to a session, as a stranger would send it.
ACTIONS: dict[str, Frame] = {
    "get_session": lambda sid: {"action": "get_session", "requestId": "x", "sessionId": sid},
    "get_conversation_messages": lambda sid: {
        "action": "get_conversation_messages",
        "requestId": "x",
        "sessionId": sid,
    },
    "send_message": lambda sid: {
        "action": "send_message",
        "requestId": "x",
        "sessionId": sid,
        "message": "Approve my own refund please",
    },
    "resume_turn": lambda sid: {"action": "resume_turn", "requestId": "x", "sessionId": sid},
    "resume_turn_by_request": lambda sid: {
        "action": "resume_turn",
        "requestId": "park",
        "sessionId": sid,
    },
    "confirm_tool_action": lambda sid: {
        "action": "confirm_tool_action",
        "requestId": "x",
        "sessionId": sid,
        "approved": True,
    },
    "cancel": lambda sid: {"action": "cancel", "requestId": "park", "sessionId": sid},
    "submit_interaction": lambda sid: {
        "action": "submit_interaction",
        "requestId": "park",
        "sessionId": sid,
        "interactionId": str(uuid.UUID(int=7)),
        "declined": True,
    },
}


def token(sub: str, org: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "org": org, "exp": now + 300}, SECRET, algorithm="HS256")


async def reply_to(client: WsClient, frame: dict[str, Any], session_id: str) -> str:
    """The first frame the server sends back, normalised: the session id and the timestamp
    blanked. An action that answers nothing (cancel) shows as the pong that follows it."""
    await client.send(frame)
    await client.send({"action": "ping", "requestId": "after"})
    raw = await asyncio.wait_for(client.ws.recv(), 10)
    assert isinstance(raw, str)
    raw = raw.replace(session_id, "<session>")
    return re.sub(r'"timestamp": ?\d+', '"timestamp":0', raw)


async def drain_pong(client: WsClient, first: str) -> None:
    """Read up to the ping's pong (when `first` was not already it)."""
    if '"type": "pong"' not in first and '"type":"pong"' not in first:
        await client.recv_until(lambda e: e["type"] == "pong", timeout=10)


async def test_every_session_action_from_a_stranger_is_an_unknown_session(
    settings, fake_model: FakeAnthropic, pool
) -> None:
    org = f"org-{uuid.uuid4().hex[:8]}"
    jwt_settings = settings.model_copy(update={"auth": "jwt", "jwt_secret": SecretStr(SECRET)})
    async with running_gateway(jwt_settings) as gateway:
        url = gateway.ws_url
        alice = await WsClient.open(f"{url}?token={token('alice', org)}")
        session = (await alice.create_session("support"))["sessionId"]
        fake_model.enqueue(Reply(tool_calls=[REFUND]), Reply(text="Refunded."))
        await alice.send(
            {"action": "send_message", "requestId": "park", "sessionId": session, "message": "hi"}
        )
        parked = await alice.recv_until(lambda e: e["type"] == "write_confirmation_required")
        assert parked[-1]["requestId"] == "park"

        strangers = {
            "anonymous": url,
            "same org, another user": f"{url}?token={token('bob', org)}",
            "same user, another org": f"{url}?token={token('alice', 'elsewhere')}",
            "a bad token": f"{url}?token=not-a-token",
        }
        compared = 0
        for who, stranger_url in strangers.items():
            async with await WsClient.open(stranger_url) as stranger:
                for name, frame in ACTIONS.items():
                    unknown = str(uuid.uuid4())
                    theirs = await reply_to(stranger, frame(session), session)
                    await drain_pong(stranger, theirs)
                    guess = await reply_to(stranger, frame(unknown), unknown)
                    await drain_pong(stranger, guess)
                    assert theirs == guess, f"{who}: {name} told a stranger something"
                    compared += 1
        assert compared == len(strangers) * len(ACTIONS)

        # Nothing a stranger sent had an effect: the approval is still Alice's to give,
        # her turn is still parked, and no other turn was started.
        async with pool.connection() as conn:
            cur = await conn.execute(
                "select count(*) as n, bool_and(decision is null) as open from approvals"
                " where session_id = %s",
                (session,),
            )
            row = await cur.fetchone()
        assert row == {"n": 1, "open": True}

        # The owner, on another connection with a fresh token, may do everything.
        async with await WsClient.open(f"{url}?token={token('alice', org)}") as tab:
            got = await tab.request(ACTIONS["get_session"](session))
            assert got["status"] == 200 and got["data"]["sessionId"] == session
            page = await tab.request(ACTIONS["get_conversation_messages"](session))
            assert page["status"] == 200
            await tab.send(ACTIONS["confirm_tool_action"](session))
            rest = await tab.recv_until(is_terminal("park"))
            assert rest[0]["message"] == "Tool action approved"
            assert kinds(rest)[-1] == "eventual_response" and tokens(rest) == "Refunded."
        alice.ws.transport.abort()  # a clean close would wait for its handshake


async def test_an_anonymous_session_is_a_bearer_capability(
    client: WsClient, gateway, fake_model: FakeAnthropic
) -> None:
    """Whoever holds an anonymous session's id may use it (the README's capability model):
    the id is a secret, 122 random bits, kept out of logs and workflow ids."""
    session = (await client.create_session())["sessionId"]
    async with await WsClient.open(gateway.ws_url) as other:
        got = await other.request(ACTIONS["get_session"](session))
    assert got["status"] == 200


@pytest.mark.parametrize(
    ("column", "age"),
    [("last_activity_at", "25 hours"), ("created_at", "8 days")],
    ids=["idle", "too-old"],
)
async def test_sessions_expire(client: WsClient, pool, column: str, age: str) -> None:
    expiring = (await client.create_session())["sessionId"]
    fresh = (await client.create_session())["sessionId"]
    async with pool.connection() as conn:  # as if that much time had passed
        await conn.execute(
            f"update sessions set {column} = now() - interval '{age}' where id = %s", (expiring,)
        )
    gone = await client.request(ACTIONS["get_session"](expiring))
    assert gone["type"] == "error" and gone["error"]["code"] == "SESSION_NOT_FOUND"
    assert json.dumps(gone["error"]) == json.dumps(
        {"code": "SESSION_NOT_FOUND", "message": f"session '{expiring}' not found"}
    )
    kept = await client.request(ACTIONS["get_session"](fresh))
    assert kept["status"] == 200


async def test_using_a_session_keeps_it_alive(client: WsClient, pool) -> None:
    session = (await client.create_session())["sessionId"]
    async with pool.connection() as conn:
        await conn.execute(
            "update sessions set last_activity_at = now() - interval '23 hours' where id = %s",
            (session,),
        )
    assert (await client.request(ACTIONS["get_session"](session)))["status"] == 200
    async with pool.connection() as conn:
        cur = await conn.execute(
            "select last_activity_at > now() - interval '1 minute' as touched from sessions"
            " where id = %s",
            (session,),
        )
        assert (await cur.fetchone())["touched"]
