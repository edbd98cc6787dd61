"""Model prices: budgets add costs up, so every model must cost what it costs.

A newer model id must not price as an older family it shares a prefix with, a model the
table lacks must not be free, and an operator's `PARLEY_MODEL_PRICES` reaches the worker.
"""

from __future__ import annotations

import uuid

import pytest
import structlog

from parley.settings import Settings
from parley.stack.fake_anthropic import FakeAnthropic, Reply
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
