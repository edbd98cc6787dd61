"""What a turn cost: a per-model price table (USD per million tokens, input / output).

Prompt caching prices off the input price: writing a prefix to the (5-minute) cache costs
1.25x, reading it back 0.1x. The API reports the three kinds of input tokens apart, and
`input_tokens` counts only the uncached ones.

Budgets (`PARLEY_BUDGET_*`) add these costs up, so a model the table does not know must
not be free: it is priced as the dearest model the table knows, and logged once, until the
operator gives its price (`PARLEY_MODEL_PRICES`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TypeVar

import structlog

log = structlog.get_logger("parley.pricing")

T = TypeVar("T")
Price = tuple[float, float]  # USD per million tokens: (input, output)

# Anthropic's list prices, by model id. A snapshot of an id ("claude-haiku-4-5-20251001",
# "claude-3-7-sonnet-latest") prices as the id; "claude-opus-4-6" is not "claude-opus-4".
PRICES_PER_MTOK: dict[str, Price] = {
    "claude-fable-5-2": (8.00, 40.00),
    "claude-fable-5-1": (10.00, 50.00),
    "claude-opus-5-5": (4.00, 20.00),
    "claude-sonnet-5-5": (2.00, 10.00),
    "claude-opus-5": (5.00, 25.00),
    "claude-sonnet-5": (2.00, 10.00),
    "claude-opus-4-8": (5.00, 25.00),
    "claude-opus-4-6": (5.00, 25.00),
    "claude-sonnet-4-6": (3.00, 15.00),
    "claude-opus-4-5": (5.00, 25.00),
    "claude-opus-4-1": (15.00, 75.00),
    "claude-opus-4": (15.00, 75.00),
    "claude-sonnet-4-5": (3.00, 15.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-3-7-sonnet": (3.00, 15.00),
    "claude-haiku-4-5": (1.00, 5.00),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-3-haiku": (0.25, 1.25),
}
CACHE_WRITE_FACTOR = 1.25  # a 5-minute cache write (the TTL our breakpoints use)
CACHE_READ_FACTOR = 0.1

_SNAPSHOT = re.compile(r"(?P<id>.+?)-(?:\d{8}|latest)")
_unpriced: set[str] = set()  # models already logged as unpriced (once per process)


def for_model(table: Mapping[str, T], model: str) -> T | None:
    """The entry for `model`, or for the id it is a snapshot of; None when there is none."""
    if model in table:
        return table[model]
    snapshot = _SNAPSHOT.fullmatch(model)
    return table.get(snapshot["id"]) if snapshot else None


def price_of(model: str, prices: Mapping[str, Price] = PRICES_PER_MTOK) -> Price | None:
    """The model's price, or None when `prices` does not know it (or its snapshot's id)."""
    return for_model(prices, model)


def cost_usd(
    model: str,
    input_tokens: int,
    output_tokens: int,
    cache_write_tokens: int = 0,
    cache_read_tokens: int = 0,
    *,
    prices: Mapping[str, Price] = PRICES_PER_MTOK,
) -> float:
    """A model call's cost; a model `prices` does not know costs as its dearest model."""
    price = price_of(model, prices)
    if price is None:
        price = max(prices.values(), key=lambda p: p[0] + p[1])
        if model not in _unpriced:
            _unpriced.add(model)
            log.warning(
                "model has no price: costed as the dearest known; set PARLEY_MODEL_PRICES",
                model=model,
                priced_as=price,
            )
    price_in, price_out = price
    prompt = (
        input_tokens
        + cache_write_tokens * CACHE_WRITE_FACTOR
        + cache_read_tokens * CACHE_READ_FACTOR
    )
    return round((prompt * price_in + output_tokens * price_out) / 1_000_000, 8)
