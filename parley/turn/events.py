"""The items of a turn's event stream: one small dataclass per kind.

The workflow and the model activity publish them; every gateway that relays the turn
decodes them and `parley.protocol.turn_event` renders them as protocol events (the only
place that knows wire names). Each class carries a `kind` literal: it is what tells the
payload converter which member of the `TurnEvent` union a decoded item is, and it must
never be changed for a kind that has been published (old histories replay through it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, TypeGuard

EVENTS_TOPIC = "events"


@dataclass(frozen=True)
class Token:
    """A delta of the reply's text, as the model wrote it.

    A model activity's items carry where they stand in it: model call `call` (the turn's
    iteration), activity attempt `attempt` (>= 1) and `seq` (0, 1, ... within the attempt).
    They are the same on the live lane and in the durable record, which is how a gateway
    merges the two (`gateway.feed`). The workflow's own items have attempt 0.
    """

    text: str
    call: int = 0
    attempt: int = 0
    seq: int = 0
    kind: Literal["token"] = field(default="token", init=False)


@dataclass(frozen=True)
class Reset:
    """A retried model call starts over: clients drop the failed attempt's text.

    Always the first item (`seq` 0) of attempt `attempt` of model call `call`."""

    attempt: int
    call: int = 0
    seq: int = 0
    kind: Literal["reset"] = field(default="reset", init=False)


@dataclass(frozen=True)
class ToolCallStarted:
    id: str
    name: str
    arguments: dict[str, Any]
    kind: Literal["tool_call"] = field(default="tool_call", init=False)


@dataclass(frozen=True)
class ToolResult:
    id: str
    name: str
    is_error: bool
    result: Any  # bounded in size by the tool activity
    # The sentence of the action that ran, when its approver changed it from the one asked.
    description: str | None = None
    kind: Literal["tool_result"] = field(default="tool_result", init=False)


@dataclass(frozen=True)
class ApprovalAsked:
    """A write tool parked the turn: a person must decide on `description`."""

    approval_id: str
    tool_name: str
    description: str
    kind: Literal["approval_asked"] = field(default="approval_asked", init=False)


@dataclass(frozen=True)
class InteractionAsked:
    """A raise tool parked the turn: the visitor is asked `spec` (a form, choice chips)."""

    interaction_id: str
    interaction: str  # the kind: identity_intake | choices
    spec: dict[str, Any]
    reason: str
    kind: Literal["interaction_asked"] = field(default="interaction_asked", init=False)


@dataclass(frozen=True)
class Citation:
    """A knowledge document the reply drew on."""

    id: str
    title: str
    snippet: str
    score: float
    url: str | None = None


@dataclass(frozen=True)
class TurnUsage:
    cost_usd: float
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Done:
    """The turn completed: the stored reply, its usage and its citations, and why it handed
    the conversation to a person, if it did."""

    message_id: str
    text: str
    usage: TurnUsage
    citations: list[Citation] = field(default_factory=list)
    escalation_reason: str | None = None
    kind: Literal["done"] = field(default="done", init=False)


@dataclass(frozen=True)
class Failed:
    """The turn failed; `code` is a protocol error code, `message` safe to show."""

    code: str
    message: str
    kind: Literal["error"] = field(default="error", init=False)


@dataclass(frozen=True)
class Cancelled:
    kind: Literal["cancelled"] = field(default="cancelled", init=False)


# Tokens first: the converter tries the members in order, and most items are tokens.
TurnEvent = (
    Token
    | Reset
    | ToolCallStarted
    | ToolResult
    | ApprovalAsked
    | Done
    | Failed
    | Cancelled
    | InteractionAsked
)
# The union as the stream's item type: the payload converter decodes into it by `kind`,
# but a union is not a class, so to a type checker it needs this one annotation.
TURN_EVENT: type[TurnEvent] = TurnEvent  # type: ignore[assignment]
TERMINAL = (Done, Failed, Cancelled)


def from_model_call(event: TurnEvent) -> TypeGuard[Token | Reset]:
    """Whether a model activity published `event` (the live lane carries only these)."""
    return isinstance(event, Token | Reset) and event.attempt >= 1


def is_terminal(event: TurnEvent) -> bool:
    """Whether `event` ends the turn's stream (nothing follows it)."""
    return isinstance(event, TERMINAL)
