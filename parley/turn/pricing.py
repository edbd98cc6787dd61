"""What a turn cost: a per-model price table (USD per million tokens, input / output).

Prompt caching prices off the input price: writing a prefix to the (5-minute) cache costs
1.25x, reading it back 0.1x. The API reports the three kinds of input tokens apart, and
`input_tokens` counts only the uncached ones.
"""

from __future__ import annotations

# Anthropic list prices. A dated model id ("claude-haiku-4-5-20251001") prices as its family.
PRICES_PER_MTOK: dict[str, tuple[float, float]] = {
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


def cost_usd(
    model: str,
    input_tokens: int,
    output_tokens: int,
    cache_write_tokens: int = 0,
    cache_read_tokens: int = 0,
) -> float:
    """A model call's cost; 0.0 for a model the table does not know."""
    for prefix in sorted(PRICES_PER_MTOK, key=len, reverse=True):
        if model.startswith(prefix):
            price_in, price_out = PRICES_PER_MTOK[prefix]
            prompt = (
                input_tokens
                + cache_write_tokens * CACHE_WRITE_FACTOR
                + cache_read_tokens * CACHE_READ_FACTOR
            )
            return round((prompt * price_in + output_tokens * price_out) / 1_000_000, 8)
    return 0.0
