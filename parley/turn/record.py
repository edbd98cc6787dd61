"""What an agent reply keeps for a reload: the record a client needs to show it again.

The turn's last step builds it from what PostgreSQL already holds (the turn's sources, its
steps, its approvals, its escalation), so none of it passes through workflow history, and
stores it with the reply (`messages.structured`); `get_conversation_messages` returns it as
`content.structuredResponse` (rendered by `parley.protocol.structured_response`).

A turn stopped or failed before its reply leaves an agent message in its place: a short
notice as its text (never the partial output) and a record whose `status` says how it ended.

Sizes are bounded, so a page of history stays small whatever the tools returned: at most
`MAX_CALLS` tool calls per reply, and each call's arguments and result at most `MAX_CHARS`
characters of JSON (longer ones are kept as a truncated string).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import TypeAdapter

from parley.turn.events import Citation

ReplyStatus = Literal["completed", "cancelled", "failed"]
CutShort = Literal["cancelled", "failed"]
# A completed reply the turn's limits ended early (PARLEY_MAX_TOKENS, PARLEY_TURN_TOKEN_BUDGET).
Truncated = Literal["length", "budget"]

MAX_CALLS = 20
MAX_CHARS = 2000
PARAGRAPH = "\n\n"  # between the texts of a reply's model calls

# The text of the agent message a stopped or failed turn leaves: what a plain-text client
# shows. The record's `status` says the same to a client that reads it.
CUT_SHORT_TEXT: dict[CutShort, str] = {
    "cancelled": "[This reply was stopped before it was finished.]",
    "failed": "[This reply could not be completed.]",
}


@dataclass(frozen=True)
class RecordedCall:
    """A tool the turn called, with its arguments and, once it returned, its result."""

    id: str
    name: str
    arguments: dict[str, Any] | str  # a str: too long, kept truncated
    is_error: bool | None = None  # None: no result (never ran: declined in time, stopped)
    result: Any = None
    # Which of the turn's model calls asked for it (None: a record stored before this was
    # kept): a reload shows it after that call's text, where it was shown live.
    iteration: int | None = None


@dataclass(frozen=True)
class RecordedDecision:
    """How a question the turn asked was answered.

    `kind` "approval" (a write tool; outcome approved, denied, expired or cancelled) or
    "interaction" (a raise tool; outcome submitted, declined, no_response or cancelled).
    `tool_call_id` ties it to its entry in the record's tool calls.
    """

    kind: str
    tool_call_id: str
    tool: str
    outcome: str
    description: str | None = None  # what the person was asked (what ran, if they changed it)
    # Who decided an approval: "visitor", or "team" (a team member, at the desk); for one
    # nobody decided (expired, cancelled), who was asked. None: an interaction, or a record
    # stored before this was kept.
    decided_by: Literal["visitor", "team"] | None = None


@dataclass(frozen=True)
class ReplyRecord:
    status: ReplyStatus
    citations: list[Citation] = field(default_factory=list)
    tool_calls: list[RecordedCall] = field(default_factory=list)
    decisions: list[RecordedDecision] = field(default_factory=list)
    escalation_reason: str | None = None  # the turn handed the conversation to a person
    truncated: Truncated | None = None
    # The text of each model call, by iteration, when the reply called tools: a reload
    # shows each call's text, then that call's tools, in the order they happened. Empty
    # for a reply without tools (its text is the message's) and for older records.
    texts: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The stored form (PostgreSQL jsonb)."""
        return asdict(self)

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> ReplyRecord:
        """A stored record; keys it does not know are ignored, missing ones take defaults."""
        return _ADAPTER.validate_python(value)


_ADAPTER: TypeAdapter[ReplyRecord] = TypeAdapter(ReplyRecord)


def join_paragraphs(texts: list[str]) -> str:
    """A reply from its model calls' texts: each non-blank one its own paragraph, so the text
    before a tool call never runs into the text after it."""
    return PARAGRAPH.join(t for t in texts if t.strip())


def paragraph_lengths(texts: list[str]) -> list[int]:
    """What `split_paragraphs` needs to find each text in their `join_paragraphs` (a
    blank text, left out of the join, counts 0)."""
    return [len(t) if t.strip() else 0 for t in texts]


def split_paragraphs(text: str, lengths: list[int]) -> list[str]:
    """Each model call's text back from the reply `join_paragraphs` made of them; anything
    after the last (a length notice) stays with the last non-blank one. Empty when the
    lengths do not fit the text (a reply joined some other way)."""
    texts: list[str] = []
    pos, last = 0, -1
    for n in lengths:
        if n == 0:
            texts.append("")
            continue
        if last >= 0:
            if text[pos : pos + len(PARAGRAPH)] != PARAGRAPH:
                return []
            pos += len(PARAGRAPH)
        if pos + n > len(text):
            return []
        last = len(texts)
        texts.append(text[pos : pos + n])
        pos += n
    if last < 0:
        return []
    texts[last] += text[pos:]
    return texts


def cut_short(status: str) -> CutShort | None:
    """How a turn that ended with `status` was cut short (None: it completed). A turn
    abandoned by its workflow (terminated, timed out) counts as failed."""
    if status == "completed":
        return None
    return "cancelled" if status == "cancelled" else "failed"


def bounded_arguments(arguments: dict[str, Any]) -> dict[str, Any] | str:
    text = json.dumps(arguments, default=str)
    return arguments if len(text) <= MAX_CHARS else _truncate(text)


def bounded_result(text: str) -> Any:
    """A tool's result as the model read it (its text): a JSON object or array as such,
    anything else as text; over `MAX_CHARS`, truncated text."""
    if len(text) > MAX_CHARS:
        return _truncate(text)
    if text[:1] in ("{", "["):
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def _truncate(text: str) -> str:
    return text[:MAX_CHARS] + "…"
