"""Cost and abuse limits: each one trips with its documented error and message.

The per-socket limits (frames, flooding, connections per address, idleness) are tripped on a
gateway of the test's own with small limits. The shared ones (sessions and turns per minute,
daily budgets) are tripped across two gateways that share nothing but PostgreSQL (and
Temporal). Each test speaks from addresses of its own (`X-Forwarded-For`, which uvicorn
honours from 127.0.0.1), so the counters of one test never reach another.
"""

from __future__ import annotations

import asyncio
import math
import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from click.testing import CliRunner
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway.limits import _until_utc_midnight
from gateway.socket_limits import FLOOD_FACTOR, FrameRate, client_key, retry_hint
from parley.settings import Settings
from parley.stack.cli import main as cli
from parley.stack.fake_anthropic import FakeAnthropic, Reply, ToolCall
from parley.storage import rate_limits, sessions
from parley.turn.pricing import cost_usd
from tests.conftest import Processes
from tests.helpers import (
    GatewayServer,
    WsClient,
    assert_still_open,
    collapse,
    kinds,
    run_turn,
    running_gateway,
    tokens,
)
from workflows.turn import BUDGET_NOTICE

RETRY = re.compile(r"try again in ([0-9.]+) s$")


def new_address() -> str:
    """An address no other test uses (10.0.0.0/8, from a fresh uuid)."""
    b = uuid.uuid4().bytes
    return f"10.{b[0]}.{b[1]}.{b[2]}"


async def open_from(server: GatewayServer, address: str) -> WsClient:
    return await WsClient.open(server.ws_url, additional_headers={"X-Forwarded-For": address})


@asynccontextmanager
async def gateway_with(settings: Settings, **limits: Any) -> AsyncIterator[GatewayServer]:
    async with running_gateway(settings.model_copy(update=limits)) as server:
        yield server


@asynccontextmanager
async def two_gateways(
    settings: Settings, **limits: Any
) -> AsyncIterator[tuple[GatewayServer, GatewayServer]]:
    """Two gateways with the same limits, sharing only the stores."""
    async with gateway_with(settings, **limits) as one, gateway_with(settings, **limits) as two:
        yield one, two


async def error_for(client: WsClient, frame: dict[str, Any]) -> dict[str, Any]:
    """The error event `frame` is answered with (fails on anything else)."""
    reply = await client.request(frame)
    assert reply["type"] == "error", reply
    assert reply["data"]["error"] == reply["error"]
    return reply["error"]


def wait_seconds(message: str) -> float:
    match = RETRY.search(message)
    assert match, message
    return float(match.group(1))


async def closed_with(client: WsClient, timeout: float = 10) -> tuple[int, str]:
    """Read until the server closes the socket; its close code and reason."""
    async with asyncio.timeout(timeout):
        try:
            while True:
                await client.ws.recv()
        except ConnectionClosed as closed:
            assert closed.rcvd is not None, "closed without a close frame"
            return closed.rcvd.code, closed.rcvd.reason


async def until(predicate: Callable[[], bool], timeout: float = 10) -> None:
    """Wait (polling) until `predicate()` holds."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def send(session_id: str, request_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "action": "send_message",
        "requestId": request_id,
        "sessionId": session_id,
        "message": "hello",
        **fields,
    }


async def turns_of(pool: Any, session_id: str) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "select count(*) as n from turns where session_id = %s", (session_id,)
        )
        row = await cur.fetchone()
    return int(row["n"])


async def completed(client: WsClient, session_id: str, request_id: str) -> None:
    events = await run_turn(client, session_id, "hello", request_id)
    assert events[-1]["type"] == "eventual_response", events[-1]


# ------------------------------------------------------------------------------------------
# The pieces on their own
# ------------------------------------------------------------------------------------------


def test_frame_rate_is_a_token_bucket_and_a_flood_is_many_times_the_rate() -> None:
    now = [0.0]
    frames = FrameRate(rate=2, burst=3, flood_window=5, clock=lambda: now[0])
    assert [frames.take() for _ in range(3)] == [None, None, None]  # the burst
    assert frames.take() == pytest.approx(0.5)  # refused: the next token in half a second
    now[0] += 0.5
    assert frames.take() is None  # and it came
    assert frames.take() is not None
    assert not frames.flooding
    # 4x the rate for the window refused: a flood (here 40 refusals within 5 s).
    assert frames.flood_threshold == FLOOD_FACTOR * 2 * 5
    for _ in range(frames.flood_threshold - 3):  # two refused so far
        frames.take()
    assert not frames.flooding
    frames.take()
    assert frames.flooding


def test_refusals_spread_over_windows_are_not_a_flood() -> None:
    now = [0.0]
    frames = FrameRate(rate=2, burst=1, flood_window=1, clock=lambda: now[0])
    for _ in range(30):  # three refusals every second for 30 s: 2.5x the rate, not 5x
        now[0] += 1
        for _ in range(5):
            frames.take()
    assert not frames.flooding


def test_no_rate_admits_everything() -> None:
    frames = FrameRate(rate=0, burst=1, flood_window=1)
    assert all(frames.take() is None for _ in range(10_000))


def test_retry_hints_never_understate() -> None:
    assert retry_hint(0.41) == "try again in 0.5 s"
    assert retry_hint(0.0) == "try again in 0.1 s"
    assert retry_hint(1.2) == "try again in 2 s"
    assert _until_utc_midnight(datetime(2025, 3, 1, 20, 47, 30, tzinfo=UTC)) == "3 h 13 min"
    assert _until_utc_midnight(datetime(2025, 3, 1, 23, 59, 59, tzinfo=UTC)) == "1 min"


def test_client_addresses_count_ipv6_by_its_64() -> None:
    from starlette.datastructures import Address

    assert client_key(Address("203.0.113.9", 1)) == "203.0.113.9"
    assert client_key(Address("2001:db8:1:2:aaaa::1", 1)) == "2001:db8:1:2::/64"
    assert client_key(Address("2001:db8:1:2:ffff::9", 1)) == "2001:db8:1:2::/64"
    assert client_key(Address("::ffff:198.51.100.4", 1)) == "198.51.100.4"
    assert client_key(None) == "unknown"


async def test_rate_counters_admit_exactly_the_limit_under_concurrency(pool: Any) -> None:
    window = rate_limits.Window("test", uuid.uuid4().hex, limit=5, seconds=60)

    async def one() -> bool:
        async with pool.connection() as conn:
            return not await rate_limits.hit(conn, [window])

    admitted = await asyncio.gather(*(one() for _ in range(20)))
    assert admitted.count(True) == 5
    async with pool.connection() as conn:
        (refusal,) = await rate_limits.hit(conn, [window])
    assert refusal.window == window and 0 < refusal.retry_after <= 60


async def test_a_rate_window_reopens_when_it_ends_and_is_pruned_later(pool: Any) -> None:
    window = rate_limits.Window("test", uuid.uuid4().hex, limit=1, seconds=60)
    async with pool.connection() as conn:
        assert await rate_limits.hit(conn, [window]) == []
        assert len(await rate_limits.hit(conn, [window])) == 1
        # The window ends (moved back rather than waited for): the next hit opens a new one.
        await conn.execute(
            "update rate_counters set window_end = now() - interval '2 minutes' where subject = %s",
            (window.subject,),
        )
        assert await rate_limits.hit(conn, [window]) == []
        assert len(await rate_limits.hit(conn, [window])) == 1
        await conn.execute(
            "update rate_counters set window_end = now() - interval '2 minutes' where subject = %s",
            (window.subject,),
        )
        assert await rate_limits.prune(conn) >= 1
        cur = await conn.execute(
            "select count(*) as n from rate_counters where subject = %s", (window.subject,)
        )
        assert (await cur.fetchone())["n"] == 0


# ------------------------------------------------------------------------------------------
# Per socket, per gateway
# ------------------------------------------------------------------------------------------


async def test_frames_over_the_rate_are_refused_and_the_socket_stays_open(
    settings: Settings,
) -> None:
    async with (
        gateway_with(settings, ws_frame_rate=1.0, ws_frame_burst=4) as server,
        await open_from(server, new_address()) as client,
    ):
        for i in range(7):
            await client.send({"action": "ping", "requestId": f"p{i}"})
        events = [await client.recv() for _ in range(7)]
        assert [e["type"] for e in events[:4]] == ["pong"] * 4
        refused = events[4:]
        assert [e["requestId"] for e in refused] == ["p4", "p5", "p6"]
        for event in refused:
            assert event["error"]["code"] == "RATE_LIMITED"
            assert event["error"]["message"].startswith(
                "too many frames on this connection (at most 1 per second); try again in"
            )
        # Waiting as long as the server said is enough (that is the hint's promise).
        await asyncio.sleep(wait_seconds(refused[-1]["error"]["message"]))
        await assert_still_open(client)


async def test_a_sustained_flood_closes_the_socket_with_1008(settings: Settings) -> None:
    limits = {"ws_frame_rate": 2.0, "ws_frame_burst": 2, "ws_flood_window": timedelta(seconds=2)}
    async with gateway_with(settings, **limits) as server:
        address = new_address()
        async with (
            await open_from(server, address) as flooder,
            await open_from(server, address) as neighbour,
        ):
            try:
                for i in range(200):
                    await flooder.send({"action": "ping", "requestId": f"f{i}"})
            except ConnectionClosed:
                pass
            assert await closed_with(flooder) == (1008, "too many frames")
            await assert_still_open(neighbour)  # one socket's flood is its own


async def test_connections_per_address_are_capped_before_the_upgrade(settings: Settings) -> None:
    async with gateway_with(settings, ws_connections_per_ip=2) as server:
        crowded, other = new_address(), new_address()
        first = await open_from(server, crowded)
        second = await open_from(server, crowded)
        with pytest.raises(InvalidStatus) as refused:
            await open_from(server, crowded)
        assert refused.value.response.status_code == 429
        assert b"too many connections from your address" in refused.value.response.body
        async with await open_from(server, other) as elsewhere:
            await assert_still_open(elsewhere)
        async with httpx.AsyncClient() as http:  # HTTP is not counted
            health = await http.get(
                f"{server.http_url}/healthz", headers={"X-Forwarded-For": crowded}
            )
            assert health.status_code == 200
        await assert_still_open(first)
        await first.close()
        counts = server.services.ip_connections
        await until(lambda: counts.count(crowded) == 1)
        async with await open_from(server, crowded) as again:
            await assert_still_open(again)
        await second.close()


async def test_an_idle_socket_is_closed(settings: Settings) -> None:
    async with (
        gateway_with(settings, ws_idle_timeout=timedelta(milliseconds=300)) as server,
        await open_from(server, new_address()) as client,
    ):
        await assert_still_open(client)
        assert await closed_with(client) == (1001, "idle timeout")


@pytest.mark.usefixtures("worker")
async def test_a_socket_relaying_a_turn_is_not_idle(
    settings: Settings, fake_model: FakeAnthropic
) -> None:
    # The turn streams for ~1.6 s, five idle timeouts, while the client sends nothing.
    fake_model.enqueue(Reply(text="x" * 80, chunk_chars=4, delay=0.08))
    async with (
        gateway_with(settings, ws_idle_timeout=timedelta(milliseconds=300)) as server,
        await open_from(server, new_address()) as client,
    ):
        session = await client.create_session(str(uuid.uuid4()))
        events = await run_turn(client, session["sessionId"], "hi", "slow")
        assert events[-1]["type"] == "eventual_response"
        assert tokens(events) == "x" * 80
        assert await closed_with(client) == (1001, "idle timeout")


# ------------------------------------------------------------------------------------------
# The model and the turn
# ------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("worker")
async def test_a_model_outside_the_agents_list_is_refused_and_nothing_starts(
    client: WsClient, pool: Any, settings: Settings, fake_model: FakeAnthropic
) -> None:
    anonymous = await client.create_session(str(uuid.uuid4()))  # unregistered: PARLEY_MODEL
    error = await error_for(client, send(anonymous["sessionId"], "opus", model="claude-opus-4-1"))
    assert error == {
        "code": "VALIDATION_ERROR",
        "message": "model 'claude-opus-4-1' is not available for this agent"
        f" (allowed: {settings.model})",
    }
    assert await turns_of(pool, anonymous["sessionId"]) == 0
    history = await client.request(
        {"action": "get_conversation_messages", "sessionId": anonymous["sessionId"]}
    )
    assert history["data"]["messages"] == []
    # Naming the default model is naming none.
    await completed(client, anonymous["sessionId"], "default")

    agent_id = str(uuid.uuid4())
    async with pool.connection() as conn:
        await sessions.upsert_agent(
            conn, agent_id, name="Picky", org_id="default", models=["claude-sonnet-4-6"]
        )
    picky = await client.create_session(agent_id)
    error = await error_for(client, send(picky["sessionId"], "opus", model="claude-opus-4-1"))
    assert error["message"].endswith(f"(allowed: {settings.model}, claude-sonnet-4-6)")
    await run_turn(client, picky["sessionId"], "hi", "sonnet", model="claude-sonnet-4-6")
    assert [r.body["model"] for r in fake_model.requests] == [settings.model, "claude-sonnet-4-6"]


def test_parley_agent_sets_the_models_a_client_may_pick(settings: Settings) -> None:
    from parley.settings import get_settings

    database_url = settings.database_url or ""
    env = {"DATABASE_URL": database_url, "TEMPORAL_ADDRESS": settings.temporal_address}
    agent_id = f"cli-{uuid.uuid4().hex[:8]}"
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(
            cli,
            [
                "agent",
                agent_id,
                "--name",
                "Shop",
                "--models",
                "claude-sonnet-4-6, claude-haiku-4-5",
            ],
            env=env,
        )
        assert result.exit_code == 0, result.output
        again = CliRunner().invoke(cli, ["agent", agent_id + "-2", "--name", "Plain"], env=env)
        assert again.exit_code == 0, again.output
    finally:
        get_settings.cache_clear()
    with psycopg.connect(database_url) as conn:
        rows = dict(
            conn.execute("select id, models from agents where id like %s", (agent_id + "%",))
        )
    assert rows == {agent_id: ["claude-sonnet-4-6", "claude-haiku-4-5"], agent_id + "-2": None}


@pytest.mark.usefixtures("worker")
async def test_a_turn_stops_when_it_has_spent_its_token_budget(
    settings: Settings, fake_model: FakeAnthropic
) -> None:
    fake_model.enqueue(
        Reply(
            text="Let me look that up.",
            tool_calls=[ToolCall("order_status", {"order_id": "ORD-1"})],
            input_tokens=400,
            output_tokens=150,
        )
    )
    async with (
        gateway_with(settings, turn_token_budget=500) as server,
        await open_from(server, new_address()) as client,
    ):
        session = await client.create_session(str(uuid.uuid4()))
        events = await run_turn(client, session["sessionId"], "where is ORD-1?", "b1")
    # No tool call, no second model call: the turn ended, saying why.
    assert collapse(kinds(events)) == ["immediate:202", "stream_token", "eventual_response"]
    assert tokens(events) == "Let me look that up." + BUDGET_NOTICE
    body = events[-1]["data"]["data"]
    assert body["response"]["responseParts"] == ["Let me look that up." + BUDGET_NOTICE]
    assert body["usage"]["promptTokens"] == 400 and body["usage"]["completionTokens"] == 150
    assert len(fake_model.requests) == 1


# ------------------------------------------------------------------------------------------
# Shared by every gateway
# ------------------------------------------------------------------------------------------


async def test_sessions_per_address_are_limited_across_gateways(settings: Settings) -> None:
    async with two_gateways(settings, sessions_per_ip_per_minute=3) as (one, two):
        address = new_address()
        async with await open_from(one, address) as a, await open_from(two, address) as b:
            await a.create_session("agent-1")
            await b.create_session("agent-1")
            await a.create_session("agent-1")
            error = await error_for(
                b, {"action": "create_conversation_session", "requestId": "s4", "agentId": "x"}
            )
            assert error["code"] == "RATE_LIMITED"
            assert error["message"].startswith(
                "too many new sessions from your address (at most 3 per minute); try again in "
            )
            assert 1 <= wait_seconds(error["message"]) <= 60
            await assert_still_open(b)
        async with await open_from(two, new_address()) as elsewhere:
            await elsewhere.create_session("agent-1")


@pytest.mark.usefixtures("worker")
async def test_turns_per_session_are_limited_across_gateways(
    settings: Settings, fake_model: FakeAnthropic, pool: Any
) -> None:
    limits = {"turns_per_session_per_minute": 2, "turns_per_ip_per_minute": 0}
    async with two_gateways(settings, **limits) as (one, two):
        address = new_address()
        async with await open_from(one, address) as a, await open_from(two, address) as b:
            session = (await a.create_session(str(uuid.uuid4())))["sessionId"]
            await completed(a, session, "t1")
            await completed(b, session, "t2")
            error = await error_for(a, send(session, "t3"))
            assert error["code"] == "RATE_LIMITED"
            assert error["message"].startswith(
                "too many messages in this session (at most 2 per minute); try again in "
            )
            assert 1 <= wait_seconds(error["message"]) <= 60
            await assert_still_open(a)
            # Another session from the same address is not limited by this one.
            other = (await b.create_session(str(uuid.uuid4())))["sessionId"]
            await completed(b, other, "o1")
    assert await turns_of(pool, session) == 2
    assert len(fake_model.requests) == 3


@pytest.mark.usefixtures("worker")
async def test_turns_per_address_are_limited_across_gateways(
    settings: Settings, fake_model: FakeAnthropic
) -> None:
    limits = {"turns_per_session_per_minute": 0, "turns_per_ip_per_minute": 3}
    async with two_gateways(settings, **limits) as (one, two):
        address = new_address()
        async with await open_from(one, address) as a, await open_from(two, address) as b:
            first = (await a.create_session(str(uuid.uuid4())))["sessionId"]
            second = (await b.create_session(str(uuid.uuid4())))["sessionId"]
            await completed(a, first, "t1")
            await completed(b, second, "t2")
            await completed(a, first, "t3")
            error = await error_for(b, send(second, "t4"))
            assert error["code"] == "RATE_LIMITED"
            assert error["message"].startswith(
                "too many messages from your address (at most 3 per minute); try again in "
            )
        async with await open_from(two, new_address()) as elsewhere:
            session = (await elsewhere.create_session(str(uuid.uuid4())))["sessionId"]
            await completed(elsewhere, session, "e1")
    assert len(fake_model.requests) == 4


@pytest.mark.usefixtures("worker")
async def test_shared_limits_hold_across_gateway_processes(
    settings: Settings, processes: Processes, fake_model: FakeAnthropic
) -> None:
    """The same, with each gateway an OS process of its own: they share only the stores."""
    limited = settings.model_copy(
        update={"sessions_per_ip_per_minute": 2, "turns_per_session_per_minute": 1}
    )
    (_, port_a), (_, port_b) = await asyncio.gather(
        processes.gateway(limited), processes.gateway(limited)
    )
    address = new_address()
    headers = {"X-Forwarded-For": address}
    async with (
        await WsClient.open(f"ws://127.0.0.1:{port_a}/ws", additional_headers=headers) as a,
        await WsClient.open(f"ws://127.0.0.1:{port_b}/ws", additional_headers=headers) as b,
    ):
        session = (await a.create_session(str(uuid.uuid4())))["sessionId"]
        await b.create_session(str(uuid.uuid4()))
        error = await error_for(
            a, {"action": "create_conversation_session", "requestId": "s3", "agentId": "x"}
        )
        assert error["code"] == "RATE_LIMITED" and "new sessions" in error["message"]
        await completed(b, session, "t1")
        error = await error_for(a, send(session, "t2"))
        assert error["code"] == "RATE_LIMITED" and "in this session" in error["message"]
    assert len(fake_model.requests) == 1


async def register_agent(pool: Any, org: str) -> str:
    agent_id = str(uuid.uuid4())
    async with pool.connection() as conn:
        await sessions.upsert_agent(conn, agent_id, name="Budgeted", org_id=org)
    return agent_id


async def spent(pool: Any, scope: str, subject: str) -> tuple[int, float]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "select tokens, cost_usd::float8 as usd from usage_daily"
            " where scope = %s and subject = %s and day = (now() at time zone 'utc')::date",
            (scope, subject),
        )
        row = await cur.fetchone()
    return (row["tokens"], row["usd"]) if row else (0, 0.0)


@pytest.mark.usefixtures("worker")
async def test_an_org_daily_token_budget_stops_new_turns_across_gateways_and_resets(
    settings: Settings, fake_model: FakeAnthropic, pool: Any
) -> None:
    org = f"org-{uuid.uuid4().hex[:8]}"
    agent_id = await register_agent(pool, org)
    fake_model.enqueue(Reply(text="Sure.", input_tokens=120, output_tokens=14))
    async with two_gateways(settings, org_daily_tokens=100) as (one, two):
        address = new_address()
        async with await open_from(one, address) as a, await open_from(two, address) as b:
            session = (await a.create_session(agent_id))["sessionId"]
            await completed(a, session, "t1")  # under budget when it started
            assert await spent(pool, "org", org) == (134, cost_usd(settings.model, 120, 14))
            assert await spent(pool, "agent", agent_id) == (134, cost_usd(settings.model, 120, 14))

            error = await error_for(b, send(session, "t2"))
            assert error["code"] == "BUDGET_EXCEEDED"
            assert error["message"].startswith(
                "this assistant has used up its daily budget; it resets at 00:00 UTC (in "
            )
            assert await turns_of(pool, session) == 1
            assert len(fake_model.requests) == 1
            await assert_still_open(b)

            # The UTC day rolls over (the stored day moved back rather than waited for).
            async with pool.connection() as conn:
                await conn.execute(
                    "update usage_daily set day = day - 1 where subject in (%s, %s)",
                    (org, agent_id),
                )
            await completed(b, session, "t3")
    assert len(fake_model.requests) == 2


@pytest.mark.usefixtures("worker")
async def test_an_agent_daily_usd_budget_stops_only_that_agent(
    settings: Settings, fake_model: FakeAnthropic, pool: Any
) -> None:
    org = f"org-{uuid.uuid4().hex[:8]}"
    costly, other = await register_agent(pool, org), await register_agent(pool, org)
    for _ in range(2):
        fake_model.enqueue(Reply(text="Sure.", input_tokens=10_000, output_tokens=1_000))
    price = cost_usd(settings.model, 10_000, 1_000)
    async with (
        gateway_with(settings, agent_daily_usd=price / 2) as server,
        await open_from(server, new_address()) as client,
    ):
        session = (await client.create_session(costly))["sessionId"]
        await completed(client, session, "t1")
        error = await error_for(client, send(session, "t2"))
        assert error["code"] == "BUDGET_EXCEEDED"
        # The org and its other agent go on.
        fresh = (await client.create_session(other))["sessionId"]
        await completed(client, fresh, "t3")
    assert math.isclose((await spent(pool, "org", org))[1], 2 * price)
