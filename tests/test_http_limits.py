"""The anonymous HTTP endpoint that reads the database (`GET /widget/agents/{id}`): requests
per client address are limited in the gateway process, and a refused request or a malformed
agent id is answered without a query.

"Without a query" is shown on a gateway whose pool has one connection, which the test holds:
a request that needed the database would wait for it (the test shows one does), one that
does not is answered at once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from gateway.app import _readiness_problems
from gateway.http_limits import MAX_ADDRESSES, SWEEP_AT_LEAST, AddressRates
from parley.settings import Settings
from parley.storage import sessions
from tests.helpers import GatewayServer, running_gateway

QUICK = 5.0  # seconds: far more than an answer without the database takes


def new_address() -> str:
    """An address no other test uses (10.0.0.0/8, from a fresh uuid)."""
    b = uuid.uuid4().bytes
    return f"10.{b[0]}.{b[1]}.{b[2]}"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_each_address_gets_a_bucket_of_a_minutes_requests() -> None:
    clock = Clock()
    rates = AddressRates(3, clock=clock)
    assert [rates.take("a") for _ in range(3)] == [None, None, None]
    assert rates.take("a") == pytest.approx(20.0)  # one request back every 60 / 3 s
    assert rates.take("b") is None  # another address has its own
    clock.now += 20
    assert rates.take("a") is None
    assert rates.take("a") is not None
    assert all(AddressRates(0).take("a") is None for _ in range(1000))  # 0: no limit


def test_addresses_are_forgotten_once_their_buckets_refill_and_memory_is_capped() -> None:
    clock = Clock()
    rates = AddressRates(2, clock=clock)
    for n in range(SWEEP_AT_LEAST):
        rates.take(f"old-{n}")
    clock.now += 60  # every bucket is full again
    rates.take("new")
    assert len(rates) == 1  # the sweep forgot the refilled ones

    busy = AddressRates(2, clock=clock)  # never refilling: only the cap bounds them
    for n in range(3 * MAX_ADDRESSES):
        busy.take(f"busy-{n}")
    assert len(busy) <= MAX_ADDRESSES
    for _ in range(2):
        busy.take("busy-repeat")
    assert busy.take("busy-repeat") is not None  # a recent address is still counted


@asynccontextmanager
async def one_connection_gateway(settings: Settings, **update: Any) -> AsyncIterator[GatewayServer]:
    """A gateway whose pool holds one connection, refusing unregistered agents."""
    limited = settings.model_copy(update={"db_pool_max": 1, "widget_auth_strict": True, **update})
    async with running_gateway(limited) as server:
        yield server


async def registered_agent(pool: Any) -> str:
    agent = f"shop-{uuid.uuid4().hex[:6]}"
    async with pool.connection() as conn:
        await sessions.upsert_agent(
            conn, agent, name="Shop", org_id="default", allowed_origins=["https://shop.example"]
        )
    return agent


async def test_over_the_limit_is_429_with_retry_after_and_no_query(settings: Settings) -> None:
    async with (
        one_connection_gateway(settings, http_requests_per_ip_per_minute=3) as server,
        httpx.AsyncClient(base_url=server.http_url, timeout=QUICK) as http,
    ):
        agent = await registered_agent(server.services.pool)
        me, other = {"X-Forwarded-For": new_address()}, {"X-Forwarded-For": new_address()}
        for _ in range(3):
            assert (await http.get(f"/widget/agents/{agent}", headers=me)).status_code == 200
        async with server.services.pool.connection():  # the database is out of reach
            refused = await http.get(f"/widget/agents/{agent}", headers=me)
            assert refused.status_code == 429
            assert 1 <= int(refused.headers["retry-after"]) <= 20  # one back every 20 s
            assert refused.json() == {
                "error": f"too many requests from your address; try again in"
                f" {refused.headers['retry-after']} s"
            }
            # Malformed ids count too: an address cannot query by other means.
            assert (await http.get("/widget/agents/%00", headers=me)).status_code == 429
        served = await http.get(f"/widget/agents/{agent}", headers=other)
        assert served.status_code == 200 and served.json()["name"] == "Shop"
        # Static files are not counted.
        assert (await http.get("/widget.js", headers=me)).status_code == 200


MALFORMED = [
    "x" * 129,  # longer than any id
    "a%00b",  # NUL
    "agent%0A",  # a trailing newline
    "a%2Fb",  # a slash
    "",  # none at all
    "%3Cscript%3E",
    "a b",
]


async def test_unknown_and_malformed_agent_ids_get_the_same_404(settings: Settings) -> None:
    async with (
        one_connection_gateway(settings) as server,
        httpx.AsyncClient(base_url=server.http_url, timeout=QUICK) as http,
    ):
        unknown = await http.get(f"/widget/agents/{uuid.uuid4()}")
        assert unknown.status_code == 404 and unknown.json() == {"error": "no such agent"}
        async with server.services.pool.connection():  # the database is out of reach
            # An id that needs the database waits for it...
            with pytest.raises(httpx.ReadTimeout):
                await http.get(f"/widget/agents/{uuid.uuid4()}", timeout=1.0)
            # ...a malformed one is answered at once, exactly as an unknown one.
            for agent_id in MALFORMED:
                bad = await http.get(f"/widget/agents/{agent_id}")
                assert bad.status_code == 404, agent_id
                assert bad.content == unknown.content, agent_id
                assert headers(bad) == headers(unknown), agent_id


def headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k not in {"date"}}


async def test_a_flood_of_readiness_checks_costs_one_connection(settings: Settings) -> None:
    """/readyz answers anyone and reads the database: requests share one check, and its
    answer serves a second's worth of them."""
    async with (
        running_gateway(settings) as server,
        httpx.AsyncClient(base_url=server.http_url, timeout=QUICK) as http,
    ):
        _readiness_problems.cache_clear()
        answers = await asyncio.gather(*(http.get("/readyz") for _ in range(30)))
        assert all(a.status_code == 200 for a in answers)
        checks = _readiness_problems.cache_info()
        assert (checks.misses, checks.hits) == (1, 29)  # one check ran; 29 shared it
