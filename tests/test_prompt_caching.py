"""Prompt caching: where the requests carry their `cache_control` breakpoints, that what a
call cached is what the next one sends again, and what cache writes and reads cost.

The layout and the reasons for each breakpoint are in `parley.prompts`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from parley import prompts
from parley.knowledge import documents
from parley.knowledge.types import Access, Document, Hit
from parley.stack.fake_anthropic import FakeAnthropic, RecordedRequest, Reply, ToolCall
from parley.turn.pricing import cost_usd
from parley.turn.types import Usage
from tests.helpers import GatewayServer, WsClient, run_turn
from tests.test_knowledge import RETURNS, _verified_session, org

EPHEMERAL = {"type": "ephemeral"}
SHIPPING = "# Shipping\n\nStandard shipping takes 5-7 business days; express takes 2."
ORDER = ToolCall("order_status", {"order_id": "ORD-7"})


def marks(body: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Where a request's breakpoints are: ("tools", i), ("system", i), ("messages", i, j)."""
    found: list[tuple[Any, ...]] = []
    for i, tool in enumerate(body.get("tools", [])):
        if "cache_control" in tool:
            found.append(("tools", i))
    for i, block in enumerate(body["system"]):
        if "cache_control" in block:
            found.append(("system", i))
    for i, message in enumerate(body["messages"]):
        for j, block in enumerate(message["content"]):
            if "cache_control" in block:
                found.append(("messages", i, j))
    assert all(_at(body, m)["cache_control"] == EPHEMERAL for m in found)
    return found


def _at(body: dict[str, Any], mark: tuple[Any, ...]) -> dict[str, Any]:
    if mark[0] == "messages":
        return body["messages"][mark[1]]["content"][mark[2]]
    return body[mark[0]][mark[1]]


def unmarked(value: Any) -> Any:
    """`value` without its `cache_control` keys: what the cache matches prefixes on."""
    if isinstance(value, dict):
        return {k: unmarked(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [unmarked(v) for v in value]
    return value


def prefix(request: RecordedRequest, messages: int) -> str:
    """The request's tools, system and first `messages` messages, serialized as sent."""
    body = request.body
    return json.dumps(unmarked([body.get("tools"), body["system"], body["messages"][:messages]]))


def grounding(request: RecordedRequest) -> str:
    """The block leading the request's current user message (its grounding)."""
    current = max(i for i, m in enumerate(request.body["messages"]) if _words(m) is not None)
    return request.body["messages"][current]["content"][0]["text"]


def _words(message: dict[str, Any]) -> str | None:
    """A user message's own words (None for tool results and assistant messages)."""
    if message["role"] != "user" or message["content"][-1]["type"] != "text":
        return None
    return message["content"][-1]["text"]


# -- pricing --------------------------------------------------------------------------


def test_cost_prices_cache_writes_and_reads_off_the_input_price() -> None:
    # Sonnet 4.5: $3 in, $15 out per MTok; a cache write $3.75, a cache read $0.30.
    assert cost_usd("claude-sonnet-4-5", 1_000_000, 0) == 3.0
    assert cost_usd("claude-sonnet-4-5", 0, 0, cache_write_tokens=1_000_000) == 3.75
    assert cost_usd("claude-sonnet-4-5", 0, 0, cache_read_tokens=1_000_000) == 0.3
    assert cost_usd("claude-sonnet-4-5-20250929", 1000, 100, 2000, 10_000) == pytest.approx(
        (1000 * 3 + 100 * 15 + 2000 * 3.75 + 10_000 * 0.3) / 1_000_000
    )
    assert cost_usd("claude-haiku-4-5", 50, 20, 3000, 12_000) == 0.0051
    assert cost_usd("claude-haiku-4-5", 120, 14) == 0.00019  # no cache: as before


def test_usage_sums_cache_tokens_and_counts_every_prompt_token() -> None:
    usage = Usage()
    usage.add(Usage(10, 5, 0.1, cache_write_tokens=300))
    usage.add(Usage(20, 7, 0.2, cache_read_tokens=300, cache_write_tokens=40))
    assert (usage.input_tokens, usage.output_tokens, usage.cost_usd) == (30, 12, 0.3)
    assert (usage.cache_write_tokens, usage.cache_read_tokens) == (340, 300)
    assert usage.prompt_tokens == 30 + 340 + 300
    # A usage recorded before caching (histories replay it) decodes with no cache tokens.
    assert Usage(**{"input_tokens": 3, "output_tokens": 1, "cost_usd": 0.0}).prompt_tokens == 3


# -- the layout, as a function --------------------------------------------------------


def test_messages_layout_leaves_its_inputs_alone() -> None:
    conversation = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "where is ORD-7?"},
    ]
    steps = [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "x"}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]},
    ]
    before = json.dumps([conversation, steps])
    hit = Hit("d", "Orders", "d.md", "", "Orders ship in 2 days.", 1.0)
    out = prompts.messages(conversation, [hit], steps)
    assert json.dumps([conversation, steps]) == before
    assert [m["role"] for m in out] == ["user", "assistant", "user", "assistant", "user"]
    assert out[2]["content"][0]["text"] == prompts.grounding_text([hit])
    assert "Orders ship in 2 days." in out[2]["content"][0]["text"]
    assert out[2]["content"][1] == {"type": "text", "text": "where is ORD-7?"}
    assert marks({"system": [], "messages": out}) == [("messages", 1, 0), ("messages", 4, 0)]
    # The first message of a conversation: nothing before it to mark.
    [only] = prompts.messages(conversation[:1], [], [])
    assert only["content"] == [
        {"type": "text", "text": prompts.NO_KNOWLEDGE},
        {"type": "text", "text": "hi"},
    ]


# -- in the turn ----------------------------------------------------------------------


@pytest.fixture
async def knowledge_session(gateway: GatewayServer, pool):
    """An anonymous session of an organization with two public documents."""
    org_id = org()
    async with pool.connection() as conn:
        for doc_id, title, text in (
            ("returns.md", "Returns", RETURNS),
            ("shipping.md", "Shipping", SHIPPING),
        ):
            await documents.upsert_document(
                conn, org_id, Document(doc_id, title, doc_id, text, Access(True))
            )
    client, session = await _verified_session(gateway, pool, org_id, None)
    async with client:
        yield client, session


@pytest.mark.usefixtures("worker")
async def test_later_turns_resend_what_earlier_turns_cached(
    knowledge_session: tuple[WsClient, dict], fake_model: FakeAnthropic
) -> None:
    client, session = knowledge_session
    fake_model.enqueue(
        Reply(text="Within 17 days."), Reply(text="5-7 business days."), Reply(text="Bye!")
    )
    await run_turn(client, session["sessionId"], "How long do I have to return?", "c1")
    await run_turn(client, session["sessionId"], "How long does shipping take?", "c2")
    await run_turn(client, session["sessionId"], "Thanks, bye", "c3")
    first, second, third = fake_model.requests
    last_tool = len(first.body["tools"]) - 1

    # The system block is the persona alone; the grounding leads the user's message.
    assert first.body["system"] == [
        {"type": "text", "text": prompts.DEFAULT_SYSTEM_PROMPT, "cache_control": EPHEMERAL}
    ]
    assert "17 days of delivery" in grounding(first)
    assert "5-7 business days" in grounding(second)
    for request in (first, second, third):
        system = json.dumps(request.body["system"])
        assert "<knowledge>" not in system and "17 days" not in system and "5-7" not in system
    assert [_words(m) for m in first.body["messages"]] == ["How long do I have to return?"]

    # First turn: no conversation before it, so only the tools and the system prompt.
    assert marks(first.body) == [("tools", last_tool), ("system", 0)]
    # Later turns also mark the last block before their own message: the previous reply.
    assert marks(second.body) == [("tools", last_tool), ("system", 0), ("messages", 1, 0)]
    assert marks(third.body) == [("tools", last_tool), ("system", 0), ("messages", 3, 0)]
    assert second.body["messages"][1]["content"][0]["text"] == "Within 17 days."
    assert third.body["messages"][3]["content"][0]["text"] == "5-7 business days."

    # Each turn sends, byte for byte, the prefix the turn before it cached at its breakpoints
    # (the stored user messages without their grounding), and then some.
    assert prefix(second, 0) == prefix(first, 0)
    assert prefix(third, 2) == prefix(second, 2)
    assert [_words(m) or m["content"][0]["text"] for m in third.body["messages"]] == [
        "How long do I have to return?",
        "Within 17 days.",
        "How long does shipping take?",
        "5-7 business days.",
        "Thanks, bye",
    ]
    assert [len(m["content"]) for m in third.body["messages"]] == [1, 1, 1, 1, 2]


@pytest.mark.usefixtures("worker")
async def test_tool_iterations_resend_what_the_previous_iteration_cached(
    knowledge_session: tuple[WsClient, dict], fake_model: FakeAnthropic
) -> None:
    client, session = knowledge_session
    fake_model.enqueue(Reply(text="Hello."))
    await run_turn(client, session["sessionId"], "Hi", "t1")
    fake_model.reset()
    fake_model.enqueue(
        Reply(tool_calls=[ORDER]),
        Reply(tool_calls=[ToolCall("add_numbers", {"a": 1, "b": 2})]),
        Reply(text="ORD-7 has shipped; 1 + 2 is 3."),
    )
    await run_turn(client, session["sessionId"], "Where is ORD-7, and what is 1 + 2?", "t2")
    first, second, third = fake_model.requests
    last_tool = len(first.body["tools"]) - 1
    cached = [("tools", last_tool), ("system", 0), ("messages", 1, 0)]

    # The first iteration marks the conversation before the turn, not its own message.
    assert marks(first.body) == cached
    assert len(first.body["messages"]) == 3
    # Later ones also mark their last block: the newest tool result.
    assert marks(second.body) == [*cached, ("messages", 4, 0)]
    assert marks(third.body) == [*cached, ("messages", 6, 0)]
    assert second.body["messages"][4]["content"][0]["type"] == "tool_result"
    assert third.body["messages"][6]["content"][0]["type"] == "tool_result"
    # Each iteration resends the previous one's messages as they were, grounding included.
    assert grounding(first) == grounding(second) == grounding(third)
    assert prefix(second, 3) == prefix(first, 3)
    assert prefix(third, 5) == prefix(second, 5)


@pytest.mark.usefixtures("worker")
async def test_turn_cost_counts_cache_writes_and_reads(
    knowledge_session: tuple[WsClient, dict], fake_model: FakeAnthropic
) -> None:
    client, session = knowledge_session
    fake_model.enqueue(
        Reply(
            tool_calls=[ORDER],
            input_tokens=900,
            output_tokens=30,
            cache_creation_input_tokens=4000,
            cache_read_input_tokens=0,
        ),
        Reply(
            text="ORD-7 has shipped.",
            input_tokens=50,
            output_tokens=20,
            cache_creation_input_tokens=3000,
            cache_read_input_tokens=12_000,
        ),
    )
    events = await run_turn(client, session["sessionId"], "Where is ORD-7?", "cost")
    usage = events[-1]["data"]["data"]["usage"]
    # Haiku 4.5 (the default): $1 / MTok in (a write $1.25, a read $0.10), $5 / MTok out.
    expected = (950 * 1 + 7000 * 1.25 + 12_000 * 0.1 + 50 * 5) / 1_000_000
    assert usage == {
        "costUsd": pytest.approx(expected),
        "promptTokens": 950 + 7000 + 12_000,
        "completionTokens": 50,
    }
    assert usage["costUsd"] == pytest.approx(
        cost_usd("claude-haiku-4-5", 900, 30, 4000, 0)
        + cost_usd("claude-haiku-4-5", 50, 20, 3000, 12_000)
    )
