"""The session half of the protocol over a real WebSocket, against real PostgreSQL."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from parley.protocol import MAX_FRAME_BYTES
from parley.storage import messages, sessions
from parley.widget_auth import sign_auth_context
from tests.helpers import GatewayServer, WsClient, assert_still_open

SESSION_KEYS = {
    "sessionId",
    "conversationId",
    "agentId",
    "agentName",
    "userParticipantId",
    "agentParticipantId",
}


async def test_health_and_readiness(gateway: GatewayServer) -> None:
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        assert (await http.get("/healthz")).status_code == 200
        ready = await http.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ready"}


async def test_ping(client: WsClient) -> None:
    before = int(time.time() * 1000)
    pong = await client.request({"action": "ping", "requestId": "p1"})
    assert pong["type"] == "pong"
    assert pong["requestId"] == "p1"
    assert "status" not in pong
    assert pong["data"]["timestamp"] >= before
    anonymous = await client.request({"action": "ping"})
    assert "requestId" not in anonymous


@pytest.mark.parametrize(
    ("frame", "code", "message", "request_id"),
    [
        ("{not json", "VALIDATION_ERROR", "invalid JSON frame", None),
        ("[1, 2]", "VALIDATION_ERROR", "JSON object", None),
        ('"text"', "VALIDATION_ERROR", "JSON object", None),
        ('{"requestId": "r1"}', "VALIDATION_ERROR", "missing 'action' field", "r1"),
        ('{"action": "fly", "requestId": "r2"}', "UNSUPPORTED_ACTION", "action 'fly'", "r2"),
        ('{"action": 42, "requestId": "r3"}', "UNSUPPORTED_ACTION", "action '42'", "r3"),
        (b"\x00\x01", "VALIDATION_ERROR", "binary", None),
    ],
)
async def test_bad_envelopes_get_an_error_and_keep_the_socket(
    client: WsClient, frame: str | bytes, code: str, message: str, request_id: str | None
) -> None:
    event = await client.request(frame)
    assert event["type"] == "error"
    assert event["error"]["code"] == code
    assert message in event["error"]["message"]
    assert event["data"]["error"] == event["error"]
    assert "status" not in event
    if request_id is None:
        assert "requestId" not in event
    else:
        assert event["requestId"] == request_id
        assert event["data"]["requestId"] == request_id
    await assert_still_open(client)


async def test_oversized_message_closes_with_1009(gateway: GatewayServer) -> None:
    client = await WsClient.open(gateway.ws_url)
    just_fits = '{"action":"ping","requestId":"big","pad":"' + "x" * 1000 + '"}'
    assert (await client.request(just_fits))["type"] == "pong"
    await client.send("x" * (MAX_FRAME_BYTES + 1))
    with pytest.raises(ConnectionClosed):
        await client.recv(timeout=10)
    assert client.ws.close_code == 1009


async def test_create_session_persists_everything(client: WsClient, pool) -> None:
    agent_id = str(uuid.uuid4())
    reply = await client.request(
        {
            "action": "create_conversation_session",
            "requestId": "c1",
            "agentId": agent_id,
            "userName": "Ada",
            "userEmail": "ada@example.com",
            "browserFingerprint": "fp-1",
            "metadata": {"page": "/pricing"},
            "supports": ["hitl"],
        }
    )
    assert reply["type"] == "immediate_response"
    assert reply["status"] == 200 and reply["message"] == "Session created"
    assert reply["requestId"] == "c1"
    data = reply["data"]
    assert set(data) == SESSION_KEYS
    assert data["agentId"] == agent_id
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                "select s.supports, s.metadata as smeta, c.metadata as cmeta, u.name, u.email,"
                " u.browser_fingerprint from sessions s join conversations c"
                " on c.id = s.conversation_id join participants u on u.id = s.user_participant_id"
                " where s.id = %s",
                (data["sessionId"],),
            )
        ).fetchone()
    assert row == {
        "supports": ["hitl"],
        "smeta": {"page": "/pricing"},
        "cmeta": {"page": "/pricing"},
        "name": "Ada",
        "email": "ada@example.com",
        "browser_fingerprint": "fp-1",
    }


@pytest.mark.parametrize("agent_id", [None, "", "   "])
async def test_create_session_requires_agent(client: WsClient, agent_id: str | None) -> None:
    frame = {"action": "create_conversation_session", "requestId": "c2"}
    if agent_id is not None:
        frame["agentId"] = agent_id
    event = await client.request(frame)
    assert event["error"] == {"code": "VALIDATION_ERROR", "message": "Missing 'agentId'"}


async def test_conversation_resume(client: WsClient) -> None:
    first = await client.create_session("agent-r", browserFingerprint="fp-r")
    again = await client.create_session(
        "agent-r", browserFingerprint="fp-r", conversationId=first["conversationId"]
    )
    assert again["conversationId"] == first["conversationId"]
    assert again["sessionId"] != first["sessionId"]
    assert again["userParticipantId"] == first["userParticipantId"]
    # Another browser, another agent, or an unknown id: a fresh conversation, silently.
    for other in (
        {"agent_id": "agent-r", "browserFingerprint": "fp-other"},
        {"agent_id": "agent-x", "browserFingerprint": "fp-r"},
    ):
        fresh = await client.create_session(**other, conversationId=first["conversationId"])
        assert fresh["conversationId"] != first["conversationId"]
    for bogus in (str(uuid.uuid4()), "not-a-uuid"):
        fresh = await client.create_session("agent-r", conversationId=bogus)
        assert fresh["conversationId"] not in (first["conversationId"], bogus)
    # A conversation bound to no browser and no user is never reopened by its id alone
    # (the id travels: webhooks, the approvals desk).
    unbound = await client.create_session("agent-r")
    guessed = await client.create_session("agent-r", conversationId=unbound["conversationId"])
    assert guessed["conversationId"] != unbound["conversationId"]


async def test_get_session(client: WsClient) -> None:
    created = await client.create_session()
    reply = await client.request(
        {"action": "get_session", "requestId": "g1", "sessionId": created["sessionId"]}
    )
    assert reply["message"] == "Session" and reply["status"] == 200
    assert set(reply["data"]) == SESSION_KEYS | {"threadId", "status"}
    assert {k: reply["data"][k] for k in SESSION_KEYS} == created
    assert reply["data"]["status"] == "active"


@pytest.mark.parametrize("action", ["get_session", "get_conversation_messages"])
async def test_session_errors(client: WsClient, action: str) -> None:
    missing = await client.request({"action": action, "requestId": "e1"})
    assert missing["error"] == {"code": "VALIDATION_ERROR", "message": "missing 'sessionId'"}
    for unknown in (str(uuid.uuid4()), "nope"):
        event = await client.request({"action": action, "requestId": "e2", "sessionId": unknown})
        assert event["error"] == {
            "code": "SESSION_NOT_FOUND",
            "message": f"session '{unknown}' not found",
        }


async def _seed_messages(pool, conversation_id: str, count: int) -> list[str]:
    """`count` messages, oldest first; every run of ten shares one timestamp."""
    stamp = datetime(2026, 1, 1, tzinfo=UTC)
    ids = []
    async with pool.connection() as conn:
        for i in range(count):
            message = await messages.add_message(
                conn,
                conversation_id=conversation_id,
                participant_id=None,
                direction="inbound" if i % 2 == 0 else "outbound",
                text=f"message {i}",
                created_at=stamp.replace(minute=i // 10),
            )
            ids.append(message.id)
    return ids


async def test_pagination_walks_every_message_once_newest_first(client: WsClient, pool) -> None:
    session = await client.create_session()
    ids = await _seed_messages(pool, session["conversationId"], 250)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        frame = {
            "action": "get_conversation_messages",
            "requestId": f"m{pages}",
            "sessionId": session["sessionId"],
            "limit": 40,
        }
        if cursor:
            frame["cursor"] = cursor
        page = (await client.request(frame))["data"]
        pages += 1
        assert set(page) == {"messages", "nextCursor", "hasMore"}
        seen += [m["id"] for m in page["messages"]]
        for m in page["messages"]:
            assert set(m) == {"id", "direction", "content", "createdAt"}
        assert (page["nextCursor"] is not None) == page["hasMore"]
        if not page["hasMore"]:
            break
        assert page["nextCursor"] == page["messages"][-1]["id"]
        cursor = page["nextCursor"]
    assert pages == 7
    assert seen == list(reversed(ids))
    first = (
        await client.request(
            {
                "action": "get_conversation_messages",
                "requestId": "t",
                "sessionId": session["sessionId"],
                "limit": 1,
            }
        )
    )["data"]["messages"][0]
    assert first["content"] == {"text": "message 249"} and first["direction"] == "outbound"


@pytest.mark.parametrize(("limit", "expected"), [(0, 50), (-3, 50), (500, 100), ("x", 50), (7, 7)])
async def test_limit_is_clamped(client: WsClient, pool, limit: object, expected: int) -> None:
    session = await client.create_session()
    await _seed_messages(pool, session["conversationId"], 120)
    page = await client.request(
        {
            "action": "get_conversation_messages",
            "requestId": "l",
            "sessionId": session["sessionId"],
            "limit": limit,
        }
    )
    assert len(page["data"]["messages"]) == expected


async def test_unknown_cursor(client: WsClient, pool) -> None:
    session = await client.create_session()
    other = await client.create_session()
    foreign = await _seed_messages(pool, other["conversationId"], 1)
    for cursor in ("nope", str(uuid.uuid4()), foreign[0]):
        event = await client.request(
            {
                "action": "get_conversation_messages",
                "requestId": "u",
                "sessionId": session["sessionId"],
                "cursor": cursor,
            }
        )
        assert event["error"]["code"] == "VALIDATION_ERROR"
        assert "cursor" in event["error"]["message"]


async def test_embed_policy(gateway: GatewayServer, pool) -> None:
    key = "s3cret-key"
    async with pool.connection() as conn:
        await sessions.upsert_agent(
            conn,
            "agent-embed",
            name="Shop helper",
            org_id="acme",
            allowed_origins=["https://shop.example.com", "https://*.acme.test"],
            auth_key=key,
        )

    async def create(origin: str | None, **fields) -> dict:
        headers = {"Origin": origin} if origin else {}
        async with await WsClient.open(gateway.ws_url, additional_headers=headers) as c:
            return await c.request(
                {"action": "create_conversation_session", "agentId": "agent-embed", **fields}
            )

    for origin in ("https://shop.example.com", "https://acme.test", "https://a.b.acme.test"):
        ok = await create(origin)
        assert ok["type"] == "immediate_response", (origin, ok)
        assert ok["data"]["agentName"] == "Shop helper"
    for origin in (None, "https://evil.example.com", "http://acme.test", "https://acme.test.evil"):
        denied = await create(origin)
        assert denied["error"]["code"] == "ORIGIN_NOT_ALLOWED", origin

    now = int(time.time())
    good = {"userId": "u-1", "timestamp": now, "signature": sign_auth_context(key, "u-1", now)}
    assert (await create("https://acme.test", authContext=good))["type"] == "immediate_response"
    for bad in (
        {**good, "signature": "00" * 32},
        {**good, "userId": "u-2"},
        {**good, "timestamp": now - 120, "signature": sign_auth_context(key, "u-1", now - 120)},
        {"userId": "u-1"},
        {**good, "signature": "é" * 64},  # non-ASCII: refused, not an internal error
        {**good, "timestamp": str(now)},
        "u-1",
    ):
        denied = await create("https://acme.test", authContext=bad)
        assert denied["error"]["code"] == "AUTH_CONTEXT_INVALID"


async def test_strict_mode_rejects_unregistered_agents(settings, database_url) -> None:
    strict = GatewayServer(settings.model_copy(update={"widget_auth_strict": True}))
    await strict.start()
    try:
        async with await WsClient.open(strict.ws_url) as c:
            event = await c.request({"action": "create_conversation_session", "agentId": "ghost"})
        assert event["error"]["code"] == "AGENT_NOT_AUTHORIZED"
    finally:
        await strict.stop()


async def test_slow_reader_does_not_block_other_connections(gateway: GatewayServer) -> None:
    """A client that never reads keeps its backlog to itself."""
    stalled = await WsClient.open(gateway.ws_url, max_queue=1)
    await stalled.create_session()
    big = "x" * 200_000
    for i in range(60):  # ~12 MB of pongs the stalled client never reads
        await stalled.send({"action": "ping", "requestId": f"{i}-{big}"})
    async with await WsClient.open(gateway.ws_url) as other:
        async with asyncio.timeout(5):
            for _ in range(20):
                await assert_still_open(other)
    await stalled.close()


async def test_official_client(gateway: GatewayServer, pool) -> None:
    from smooth_operator import SmoothAgentClient

    client = SmoothAgentClient(url=gateway.ws_url)
    await client.connect()
    try:
        agent_id = str(uuid.uuid4())
        created = await client.create_conversation_session(agent_id=agent_id, user_name="Grace")
        assert str(created.agent_id) == agent_id
        got = await client.get_session(session_id=str(created.session_id))
        assert got.conversation_id == created.conversation_id
        assert await client.ping() > 0
        ids = await _seed_messages(pool, str(created.conversation_id), 5)
        page = await client.get_messages(session_id=str(created.session_id), limit=2)
        assert [str(m.id) for m in page.messages] == [ids[4], ids[3]]
        assert page.has_more
        older = await client.get_messages(
            session_id=str(created.session_id), limit=10, before=page.next_cursor
        )
        assert [str(m.id) for m in older.messages] == [ids[2], ids[1], ids[0]]
        assert not older.has_more
    finally:
        await client.disconnect()
