"""The values that cross the workflow boundary: the workflow's input and result, and the
activities' inputs and outputs (the stream's items are in `parley.turn.events`).

They are plain dataclasses (deterministic, sandbox-safe) and hold ids and short strings
only: conversation content stays in PostgreSQL, so a turn's history does not grow with the
length of the conversation it belongs to.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from parley.turn.events import Citation

TurnStatus = Literal["running", "completed", "failed", "cancelled", "abandoned"]
EndStatus = Literal["completed", "failed", "cancelled"]  # what a turn's own end can be
# How a parked write was decided. "cancelled": the turn was stopped first (an expiry that
# loses to a cancel reads it back); such a write never runs.
Verdict = Literal["approved", "denied", "expired", "cancelled"]
StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal"]


def turn_id(session_id: str, request_id: str) -> str:
    """The workflow id of a turn: one per (session, client request), the same on every
    gateway (a repeated requestId re-attaches). A hash: the session id grants access to its
    conversation, so it must not stand in workflow ids, Temporal's UI or log lines."""
    digest = hashlib.sha256(f"{session_id}\x00{request_id}".encode()).hexdigest()
    return f"turn-{digest[:32]}"


@dataclass
class TurnInput:
    session_id: str  # "": the turn's row has it (turns started before this carry it here)
    request_id: str
    conversation_id: str
    user_participant_id: str
    agent_participant_id: str
    org_id: str
    user_id: str | None
    message: str
    model: str
    stream: bool = True
    max_iterations: int = 20
    approval_timeout_seconds: float = 1800.0
    linger_seconds: float = 0.0  # how long the finished turn's stream stays readable
    groups: list[str] | None = None  # the principal's groups (knowledge access), if it named any
    agent_id: str = ""  # whose daily usage the turn's model calls count against
    # Prompt + output tokens the turn's model calls may spend, all told (0: no budget).
    token_budget: int = 0
    # How long a rich interaction waits for the visitor (0: approval_timeout_seconds).
    interaction_timeout_seconds: float = 0.0
    skill: str | None = None  # the organization's skill this turn runs (its name)


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]
    write: bool = False  # parks the turn for a person's approval
    description: str = ""  # the sentence that person decides on
    offered: bool = True  # False: the request did not offer this tool (a skill's), it never runs
    # How long its approval waits (the tool's own `approval_timeout`; 0: the turn's).
    approval_timeout_seconds: float = 0.0


@dataclass
class Usage:
    """Tokens and their price, priced by the model activity when it made the call: a
    replayed history keeps the cost it had, whatever today's prices.

    The prompt's tokens come in three kinds, priced apart: uncached input, cache writes and
    cache reads (histories recorded before caching decode them as 0).
    """

    input_tokens: int = 0  # uncached prompt tokens only
    output_tokens: int = 0
    cost_usd: float = 0.0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0

    @property
    def prompt_tokens(self) -> int:
        """Every prompt token, cached or not (the wire's `promptTokens`)."""
        return self.input_tokens + self.cache_write_tokens + self.cache_read_tokens

    def add(self, other: Usage) -> None:
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cache_write_tokens += other.cache_write_tokens
        self.cache_read_tokens += other.cache_read_tokens
        self.cost_usd = round(self.cost_usd + other.cost_usd, 8)


@dataclass
class UserMessage:
    """The user's words, stored by the turn's first model call before it reads the context."""

    participant_id: str
    message_id: str
    text: str


@dataclass
class ModelInput:
    turn_id: str
    conversation_id: str
    org_id: str
    user_id: str | None
    model: str
    iteration: int
    stream: bool
    allow_tools: bool
    user_message: UserMessage | None = None  # set on the turn's first call only
    after: int = 0  # stream items the workflow published before this call (live lane order)
    groups: list[str] | None = None
    agent_id: str = ""  # with org_id: whose daily usage this call counts against
    skill: str | None = None  # the turn's skill: its instructions and the tools it allows
    paragraph: bool = False  # an earlier call of the turn said something: this text follows it


@dataclass
class ModelOutput:
    text: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    stop_reason: StopReason | str = "end_turn"  # a reason newer than this list passes as is


@dataclass
class ToolInput:
    turn_id: str
    iteration: int
    call: ToolCall
    org_id: str
    user_id: str | None
    verdict: Verdict | None = None  # for writes
    groups: list[str] | None = None
    interaction_id: str | None = None  # a raise tool's call the turn parked on


@dataclass
class ApprovalInput:
    approval_id: str
    turn_id: str
    session_id: str
    request_id: str
    call: ToolCall
    deadline: datetime


@dataclass
class Decision:
    """The `verdict` signal: a person's claimed decision on one approval."""

    approval_id: str
    approved: bool


@dataclass
class Extension:
    """The `extend_approval` signal: the desk moved an approval's deadline later (already
    recorded in PostgreSQL)."""

    approval_id: str
    deadline: datetime


@dataclass
class ApprovalDue:
    """What the deadline's expiry found in PostgreSQL: the decision that stands (`expired`
    when it expired the approval now), or None with the later deadline the row holds (an
    extension the turn was not told of yet)."""

    decision: Verdict | None
    deadline: datetime


@dataclass
class InteractionInput:
    """A raise tool's call: the question to record, if the visitor's client can show it."""

    interaction_id: str
    turn_id: str
    session_id: str
    request_id: str
    conversation_id: str
    call: ToolCall
    deadline: datetime


@dataclass
class InteractionPark:
    """Whether the turn parks on a raise tool's call, and the question it then shows.

    Not parked: the client cannot render the kind, the visitor declined it before in this
    conversation, or the arguments ask no question; the tool then answers by itself."""

    parked: bool
    kind: str = ""
    spec: dict[str, Any] = field(default_factory=dict)
    reason: str = ""


@dataclass
class Answered:
    """The `interaction_answered` signal: a visitor's claimed answer to one question."""

    interaction_id: str


@dataclass
class ToolOutput:
    is_error: bool
    result: Any  # what the toolResult chunk shows: the value, bounded in size
    # The sentence of the action that ran, when its approver changed it from the one asked.
    description: str | None = None


@dataclass
class FinishInput:
    turn_id: str
    conversation_id: str
    participant_id: str
    message_id: str
    text: str
    status: EndStatus
    # A turn that ends before its first model call stored the user message stores it here.
    user_message: UserMessage | None = None
    # The reply was ended early by the output limit ("length") or the turn's token budget.
    truncated: Literal["length", "budget"] | None = None
    # The length of each model call's text in `text` (`parley.turn.record.paragraph_lengths`):
    # the record keeps which text came before which tool call. Empty from older workflows.
    text_lengths: list[int] = field(default_factory=list)


@dataclass
class FinishOutput:
    status: TurnStatus  # the status that stands (a cancel may have released the slot first)
    citations: list[Citation] = field(default_factory=list)  # at most 8, short
    escalation_reason: str | None = None  # the turn handed its conversation to a person


@dataclass
class TurnOutcome:
    status: TurnStatus
    message_id: str | None = None
