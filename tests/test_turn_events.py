"""The turn stream's typed events: each kind survives the payload converter as itself, and
renders as the protocol event the published client accepts; and so does a reply's record."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from smooth_operator.types import GetMessagesResponse
from temporalio.converter import DataConverter

from parley import protocol
from parley.turn.events import (
    ApprovalAsked,
    Cancelled,
    Citation,
    Done,
    Failed,
    Reset,
    Token,
    ToolCallStarted,
    ToolResult,
    TurnEvent,
    TurnUsage,
    is_terminal,
)
from parley.turn.record import RecordedCall, RecordedDecision, ReplyRecord
from tests.helpers import check_event

EVENTS: list[TurnEvent] = [
    Token("hel"),
    Reset(2),
    ToolCallStarted("tu_1", "lookup_order", {"order_id": "A1"}),
    ToolResult("tu_1", "lookup_order", False, {"status": "shipped"}),
    ToolResult("tu_2", "broken", True, "broken failed"),
    ApprovalAsked("ap-1", "issue_refund", "Refund $20 on order A1"),
    Done(
        "m-1",
        "Your order shipped.",
        TurnUsage(0.0012, 120, 30),
        [Citation("shipping.md", "Shipping", "We ship in 2 days", 0.5, "https://x.test/s")],
    ),
    Done("m-2", "No sources.", TurnUsage(0.0, 1, 1)),
    Failed("AGENT_ERROR", "agent turn failed"),
    Cancelled(),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.kind)
def test_each_kind_decodes_as_itself(event: TurnEvent) -> None:
    converter = DataConverter.default.payload_converter
    [payload] = converter.to_payloads([event])
    [decoded] = converter.from_payloads([payload], [TurnEvent])  # type: ignore[list-item]
    assert decoded == event
    assert type(decoded) is type(event)


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.kind)
def test_each_kind_renders_as_a_protocol_event(event: TurnEvent) -> None:
    rendered = protocol.turn_event("r1", event, stream=True)
    assert rendered is not None
    check_event(json.dumps(rendered))
    assert rendered["requestId"] == "r1"


def test_stream_off_hides_tokens_and_tool_chunks_only() -> None:
    shown = [type(e) for e in EVENTS if protocol.turn_event("r", e, stream=False) is not None]
    assert set(shown) == {ApprovalAsked, Done, Failed, Cancelled}


def test_rendered_fields() -> None:
    done = protocol.turn_event("r", EVENTS[6], stream=True)
    assert done is not None
    data = done["data"]["data"]
    assert data["usage"] == {"costUsd": 0.0012, "promptTokens": 120, "completionTokens": 30}
    assert data["citations"][0]["url"] == "https://x.test/s"
    assert "citations" not in protocol.turn_event("r", EVENTS[7], stream=True)["data"]["data"]
    result = protocol.turn_event("r", EVENTS[3], stream=True)
    assert result is not None
    assert result["data"]["state"]["rawResponse"] == {
        "toolResult": {"name": "lookup_order", "isError": False, "result": {"status": "shipped"}}
    }
    ask = protocol.turn_event("r", EVENTS[5], stream=True)
    assert ask is not None
    assert ask["data"]["data"] == {
        "toolId": "issue_refund",
        "actionDescription": "Refund $20 on order A1",
    }


def test_terminal_kinds() -> None:
    assert [type(e) for e in EVENTS if is_terminal(e)] == [Done, Done, Failed, Cancelled]


def test_an_escalated_turn_renders_its_fields() -> None:
    done = Done("m-3", "A person will follow up.", TurnUsage(0.0, 1, 1), [], "needs a refund desk")
    converter = DataConverter.default.payload_converter
    [decoded] = converter.from_payloads(converter.to_payloads([done]), [TurnEvent])  # type: ignore[list-item]
    assert decoded == done
    rendered = protocol.turn_event("r", done, stream=True)
    assert rendered is not None
    check_event(json.dumps(rendered))
    data = rendered["data"]["data"]
    assert data["needsEscalation"] is True and data["escalationReason"] == "needs a refund desk"
    assert data["response"]["resolutionStatus"] == "requires_escalation"
    # A Done published before escalation existed decodes with none.
    [old] = converter.from_payloads(converter.to_payloads([EVENTS[7]]), [TurnEvent])  # type: ignore[list-item]
    assert isinstance(old, Done) and old.escalation_reason is None


def test_a_reply_record_reads_as_the_published_client_expects() -> None:
    record = ReplyRecord(
        status="completed",
        citations=[Citation("returns.md", "Returns", "Within 17 days", 0.5)],
        tool_calls=[
            RecordedCall(
                "tu_1", "issue_refund", {"order_id": "A1", "note": None}, False, {"ok": 1}
            ),
            RecordedCall("tu_2", "issue_refund", {"order_id": "A2"}),  # never ran
        ],
        decisions=[RecordedDecision("approval", "tu_1", "issue_refund", "approved", "Refund A1")],
        escalation_reason="wants a person",
    )
    stored = json.loads(json.dumps(record.to_json()))  # through jsonb and back
    assert ReplyRecord.from_json(stored) == record
    shown = protocol.structured_response(ReplyRecord.from_json(stored))
    page = protocol.MessagesPage(
        messages=[
            protocol.ConversationMessage(
                id="7f0b3c3e-5b8f-4c2e-9d1a-0e6f2a4b5c6d",
                direction="outbound",
                content=protocol.MessageContent(text="Done.", structured_response=shown),
                created_at=datetime.now(UTC),
            )
        ],
        next_cursor=None,
        has_more=False,
    ).wire()
    parsed = GetMessagesResponse.model_validate(page)
    assert parsed.messages[0].content.structured_response == shown
    assert shown["toolCalls"][0]["arguments"] == {"order_id": "A1", "note": None}
    assert "result" not in shown["toolCalls"][1] and "isError" not in shown["toolCalls"][1]
    assert shown["citations"] == [
        {"id": "returns.md", "title": "Returns", "snippet": "Within 17 days", "score": 0.5}
    ]
    assert (shown["needsEscalation"], shown["resolutionStatus"]) == (True, "requires_escalation")
    # A record written by an older or newer version: missing keys default, unknown ones go.
    assert ReplyRecord.from_json({"status": "failed", "later": 1}) == ReplyRecord("failed")
