"""The converter's memoized type-hint lookups: same results, one lookup per class."""

from __future__ import annotations

from temporalio.converter import DataConverter, _payload_converter

from parley.temporal_client import memoize_type_hints
from parley.turn.events import Token
from parley.turn.types import ModelInput, UserMessage


def test_memoized_type_hints_decode_the_same_values() -> None:
    memoize_type_hints()
    memoize_type_hints()  # idempotent: not a cache of a cache
    hints = _payload_converter.get_type_hints
    assert hints.cache_info  # type: ignore[attr-defined]
    assert not hasattr(hints.__wrapped__, "cache_info")  # type: ignore[attr-defined]

    converter = DataConverter.default.payload_converter
    value = ModelInput(
        turn_id="turn:s:r",
        conversation_id="c",
        org_id="default",
        user_id=None,
        model="claude-haiku-4-5",
        iteration=0,
        stream=True,
        allow_tools=True,
        user_message=UserMessage("p", "m", "hello"),
    )
    before = hints.cache_info().hits  # type: ignore[attr-defined]
    for _ in range(3):
        [payload] = converter.to_payloads([value])
        assert converter.from_payloads([payload], [ModelInput]) == [value]
        [payload] = converter.to_payloads([Token("hi")])
        assert converter.from_payloads([payload], [Token]) == [Token("hi")]
    assert hints.cache_info().hits > before  # type: ignore[attr-defined]
