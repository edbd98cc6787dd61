"""Per-model settings: prices and request options.

Budgets add costs up, so every model must cost what it costs: a newer model id must not
price as an older family it shares a prefix with, a model the table lacks must not be free,
and an operator's `PARLEY_MODEL_PRICES` reaches the worker. `PARLEY_MODEL_OPTIONS` adds
request parameters (effort, thinking) to one model's calls and no other's.
"""

from __future__ import annotations

import json
import uuid

import pytest
import structlog

from parley.settings import Settings
from parley.stack.fake_anthropic import FakeAnthropic, Reply
from parley.storage import sessions
from parley.turn.pricing import PRICES_PER_MTOK, cost_usd, price_of
from tests.conftest import Processes
from tests.helpers import WsClient, run_turn, running_gateway

MTOK = 1_000_000


def test_a_model_prices_as_itself_or_its_snapshot_never_as_an_older_prefix() -> None:
    assert cost_usd("claude-opus-4-6", MTOK, MTOK) == 5 + 25  # not Opus 4's 15 + 75
    assert cost_usd("claude-opus-4-20250514", MTOK, 0) == 15
    assert cost_usd("claude-sonnet-5-5", MTOK, MTOK) == 2 + 10
    assert cost_usd("claude-3-7-sonnet-latest", 0, MTOK) == 15
    assert price_of("claude-haiku-4-5-20251001") == (1.0, 5.0)
    assert price_of("claude-haiku-4-5-x") is None
    assert price_of("claude-haiku") is None


def test_a_model_without_a_price_costs_as_the_dearest_and_says_so_once() -> None:
    dearest = max(PRICES_PER_MTOK.values(), key=sum)
    model = f"claude-unknown-{uuid.uuid4().hex[:6]}"
    with structlog.testing.capture_logs() as logs:
        first = cost_usd(model, MTOK, MTOK)
        second = cost_usd(model, MTOK, MTOK)
    assert first == second == sum(dearest) > 0
    warned = [e for e in logs if e.get("model") == model]
    assert len(warned) == 1 and "PARLEY_MODEL_PRICES" in warned[0]["event"], logs
    # An operator's price wins over the table and over the fallback.
    assert cost_usd(model, MTOK, MTOK, prices={model: (0.5, 1.5)}) == 2.0


def test_model_prices_are_read_from_the_environment_and_validated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PARLEY_MODEL_PRICES", '{"claude-next": [2, 10]}')
    assert Settings().model_prices == {"claude-next": (2.0, 10.0)}
    for bad in ('{"claude-next": [2]}', '{"claude-next": [-1, 10]}', "[2, 10]", "cheap"):
        monkeypatch.setenv("PARLEY_MODEL_PRICES", bad)
        with pytest.raises(ValueError):
            Settings()


async def test_the_worker_costs_a_turn_at_the_operators_price(
    isolated_settings: Settings, processes: Processes, fake_model: FakeAnthropic
) -> None:
    model = isolated_settings.model
    processes.worker(isolated_settings, PARLEY_MODEL_PRICES=f'{{"{model}": [100, 1000]}}')
    fake_model.enqueue(Reply(text="Hello."))
    async with (
        running_gateway(isolated_settings) as gateway,
        await WsClient.open(gateway.ws_url) as client,
    ):
        session = await client.create_session(str(uuid.uuid4()))
        events = await run_turn(client, session["sessionId"], "hi", "priced", timeout=60)
    done = events[-1]
    assert done["type"] == "eventual_response", done
    usage = done["data"]["data"]["usage"]
    tokens_in, tokens_out = usage["promptTokens"], usage["completionTokens"]
    assert usage["costUsd"] == pytest.approx((tokens_in * 100 + tokens_out * 1000) / MTOK)
    assert usage["costUsd"] != pytest.approx(cost_usd(model, tokens_in, tokens_out))


def test_model_options_are_validated_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    options = '{"claude-sonnet-5-5": {"output_config": {"effort": "low"}, "temperature": 0.2}}'
    monkeypatch.setenv("PARLEY_MODEL_OPTIONS", options)
    (only,) = Settings().model_options.values()
    assert only.request_fields() == {"output_config": {"effort": "low"}, "temperature": 0.2}
    # Parley's own parameters cannot be overridden, and values are checked.
    for bad in ('{"m": {"messages": []}}', '{"m": {"max_tokens": 9}}', '{"m": {"temperature": 3}}'):
        monkeypatch.setenv("PARLEY_MODEL_OPTIONS", bad)
        with pytest.raises(ValueError):
            Settings()


async def test_a_models_options_go_with_its_calls_only(
    isolated_settings: Settings, processes: Processes, fake_model: FakeAnthropic
) -> None:
    model, other = isolated_settings.model, "claude-sonnet-4-6"
    options = {model: {"output_config": {"effort": "low"}, "thinking": {"type": "adaptive"}}}
    processes.worker(isolated_settings, PARLEY_MODEL_OPTIONS=json.dumps(options))
    picky = f"picky-{uuid.uuid4().hex[:6]}"
    fake_model.enqueue(Reply(text="Quick."), Reply(text="Also quick."))
    async with (
        running_gateway(isolated_settings) as gateway,
        await WsClient.open(gateway.ws_url) as client,
    ):
        async with gateway.services.pool.connection() as conn:
            await sessions.upsert_agent(conn, picky, name="Picky", org_id="default", models=[other])
        session = await client.create_session(picky)
        for request_id, chosen in (("default", None), ("other", other)):
            extra = {"model": chosen} if chosen else {}
            events = await run_turn(
                client, session["sessionId"], "hi", request_id, timeout=60, **extra
            )
            assert events[-1]["type"] == "eventual_response", events[-1]
    default_call, other_call = (r.body for r in fake_model.requests)
    assert default_call["model"] == model
    assert default_call["output_config"] == {"effort": "low"}
    assert default_call["thinking"] == {"type": "adaptive"}
    assert other_call["model"] == other
    assert "output_config" not in other_call and "thinking" not in other_call
