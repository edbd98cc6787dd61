"""The smooth-operator wire protocol, defined once for the gateway and the tests.

Inbound actions are pydantic models: a frame that does not fit gets one clear
`VALIDATION_ERROR` message (see `describe_validation_error`). Outbound events are built by
the constructors below, which emit exactly the keys PROTOCOL.md allows: the published
clients forbid extra fields and silently drop an event that carries one.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    ValidationError,
    field_validator,
)
from pydantic.alias_generators import to_camel

from parley import attachments, skills
from parley.turn import events as turn
from parley.turn.record import ReplyRecord

MAX_FRAME_BYTES = 256 * 1024
MAX_MESSAGE_CHARS = 10_000


def now_ms() -> int:
    """Unix epoch milliseconds, the protocol's `timestamp` unit."""
    return time.time_ns() // 1_000_000


class ErrorCode:
    """Error codes from PROTOCOL.md §3 (plus `NO_ACTIVE_TURN` for `resume_turn`, and
    `BUDGET_EXCEEDED` when a daily budget is spent)."""

    VALIDATION_ERROR = "VALIDATION_ERROR"
    UNSUPPORTED_ACTION = "UNSUPPORTED_ACTION"
    SESSION_NOT_FOUND = "SESSION_NOT_FOUND"
    TURN_IN_PROGRESS = "TURN_IN_PROGRESS"
    LLM_UNAVAILABLE = "LLM_UNAVAILABLE"
    NO_PENDING_CONFIRMATION = "NO_PENDING_CONFIRMATION"
    # The pending approval is one only a team member (a role, at the approvals desk) may
    # decide: the visitor's confirm is refused and the turn stays parked.
    NOT_AUTHORIZED_TO_APPROVE = "NOT_AUTHORIZED_TO_APPROVE"
    NO_ACTIVE_TURN = "NO_ACTIVE_TURN"
    AGENT_NOT_AUTHORIZED = "AGENT_NOT_AUTHORIZED"
    ORIGIN_NOT_ALLOWED = "ORIGIN_NOT_ALLOWED"
    AUTH_CONTEXT_INVALID = "AUTH_CONTEXT_INVALID"
    AGENT_ERROR = "AGENT_ERROR"
    STORAGE_ERROR = "STORAGE_ERROR"
    RATE_LIMITED = "RATE_LIMITED"
    BUDGET_EXCEEDED = "BUDGET_EXCEEDED"
    SKILL_NOT_FOUND = "SKILL_NOT_FOUND"
    NO_PENDING_INTERACTION = "NO_PENDING_INTERACTION"
    INTERACTION_MISMATCH = "INTERACTION_MISMATCH"
    INTERNAL_ERROR = "INTERNAL_ERROR"


class ProtocolError(Exception):
    """Raised by a handler to answer its action with an `error` event (socket stays open)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# ----------------------------------------------------------------------------------------
# Inbound actions
# ----------------------------------------------------------------------------------------


# Bounds on what a stranger may send (a turn's workflow id embeds the requestId, and
# Temporal refuses ids over ~1,000 bytes). Strings are also checked for NUL characters and
# unpaired surrogates, and frames for depth, before they reach these models
# (gateway/frames.py).
MAX_REQUEST_ID = 256
MAX_ID = 128  # agentId, sessionId, conversationId, cursors
MAX_NAME = 200
MAX_EMAIL = 320
MAX_FINGERPRINT = 256
MAX_MODEL = 100
MAX_METADATA_BYTES = 8 * 1024
MAX_SUPPORTS = 16

RequestId = Annotated[str, Field(max_length=MAX_REQUEST_ID)]
Id = Annotated[str, Field(max_length=MAX_ID)]


class Action(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", str_strip_whitespace=False
    )

    action: str
    request_id: RequestId | None = None


def _required_text(message: str) -> Any:
    def check(value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ValueError(message)
        return value

    return BeforeValidator(check)


class AuthContext(BaseModel):
    """A host page's signed claim of who its visitor is (`{userId, signature, timestamp}`).

    Parsed only where it matters (an agent with an embed policy), and any shape it does not
    fit is AUTH_CONTEXT_INVALID there, as in the reference server, not a validation error.
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, strict=True)

    user_id: str
    signature: str
    timestamp: int

    @classmethod
    def parse(cls, value: Any) -> AuthContext | None:
        """The context, or None when `value` is not one."""
        try:
            return cls.model_validate(value)
        except ValidationError:
            return None


class CreateSession(Action):
    agent_id: Annotated[str, _required_text("Missing 'agentId'")] = Field(
        default=None, validate_default=True, max_length=MAX_ID
    )
    user_name: str | None = Field(None, max_length=MAX_NAME)
    user_email: str | None = Field(None, max_length=MAX_EMAIL)
    browser_fingerprint: str | None = Field(None, max_length=MAX_FINGERPRINT)
    metadata: dict[str, Any] | None = None
    supports: list[Annotated[str, Field(max_length=MAX_ID)]] | None = Field(
        None, max_length=MAX_SUPPORTS
    )
    auth_context: Any = None  # see AuthContext.parse
    conversation_id: Id | None = None

    @field_validator("metadata")
    @classmethod
    def _small_metadata(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and len(json.dumps(value)) > MAX_METADATA_BYTES:
            raise ValueError(f"'metadata' is larger than {MAX_METADATA_BYTES} bytes")
        return value


class SessionAction(Action):
    """Any action addressed to one session."""

    session_id: Annotated[str, _required_text("missing 'sessionId'")] = Field(
        default=None, validate_default=True, max_length=MAX_ID
    )


def _clamp_limit(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return 50
    return min(int(value), 100)


class GetMessages(SessionAction):
    limit: Annotated[int, BeforeValidator(_clamp_limit)] = 50
    cursor: Id | None = None
    before: Id | None = None

    @property
    def page_cursor(self) -> str | None:
        """`cursor`, or `before` as the published Python client spells it."""
        return self.cursor or self.before


class SendMessage(SessionAction):
    request_id: Annotated[str, _required_text("send_message requires a 'requestId'")] = Field(
        default=None, validate_default=True, max_length=MAX_REQUEST_ID
    )
    message: Annotated[str, _required_text("missing or empty 'message'")] = Field(
        default=None, validate_default=True
    )
    stream: StrictBool = True
    model: str | None = Field(None, max_length=MAX_MODEL)
    # Entries that do not fit are dropped (PROTOCOL.md); how many may remain is the
    # gateway's check (PARLEY_MAX_IMAGES, PARLEY_MAX_FILES).
    images: Annotated[tuple[attachments.Image, ...], PlainValidator(attachments.parse_images)] = ()
    files: Annotated[tuple[attachments.File, ...], PlainValidator(attachments.parse_files)] = ()
    skill: str | None = Field(None, pattern=skills.NAME_PATTERN)

    @field_validator("message")
    @classmethod
    def _bounded(cls, value: str) -> str:
        if len(value) > MAX_MESSAGE_CHARS:
            raise ValueError(f"'message' is longer than {MAX_MESSAGE_CHARS} characters")
        return value

    def fingerprint(self) -> bytes:
        """SHA-256 of what this send asks (message, model, skill, images, files): a retry
        of it has the same, another message under the same requestId does not."""
        asked = [
            self.message,
            self.model,
            self.skill,
            [[i.media_type, len(i.data or b""), i.url, i.detail] for i in self.images],
            [[f.name, f.url, f.mime_type] for f in self.files],
        ]
        digest = hashlib.sha256(json.dumps(asked).encode())
        for image in self.images:  # the bytes as they are (their lengths are in `asked`)
            digest.update(image.data or b"")
        return digest.digest()


def _strict_bool(message: str) -> Any:
    def check(value: Any) -> Any:
        if not isinstance(value, bool):
            raise ValueError(message)
        return value

    return BeforeValidator(check)


class ConfirmToolAction(SessionAction):
    session_id: Annotated[str, _required_text("confirm_tool_action requires a 'sessionId'")] = (
        Field(default=None, validate_default=True, max_length=MAX_ID)
    )
    # Never approve on a bad shape: missing, "true", 1 are all refused.
    approved: Annotated[bool, _strict_bool("confirm_tool_action requires a boolean 'approved'")] = (
        Field(default=None, validate_default=True)
    )


class SubmitInteraction(SessionAction):
    """The visitor's answer to a rich interaction. `values` and `declined` are checked by the
    handler, after the interaction is found: PROTOCOL.md orders a stale id before a bad shape."""

    request_id: Annotated[str, _required_text("submit_interaction requires a 'requestId'")] = Field(
        default=None, validate_default=True, max_length=MAX_REQUEST_ID
    )
    interaction_id: Annotated[str, _required_text("missing 'interactionId'")] = Field(
        default=None, validate_default=True, max_length=MAX_ID
    )
    kind: str | None = Field(None, max_length=MAX_ID)
    values: Any = None
    declined: Any = None


class Cancel(Action):
    session_id: Id | None = None


class ResumeTurn(SessionAction):
    pass


def describe_validation_error(err: ValidationError) -> str:
    """One human sentence for the first problem in a frame, naming the wire field."""
    first = err.errors()[0]
    loc = ".".join(to_camel(str(part)) for part in first["loc"]) or "frame"
    if first["type"] == "value_error":
        return str(first["ctx"]["error"])
    if first["type"] == "missing":
        return f"missing '{loc}'"
    if first["type"] == "bool_type":
        return f"'{loc}' must be a boolean"
    return f"invalid '{loc}': {first['msg']}"


# ----------------------------------------------------------------------------------------
# Response payloads
# ----------------------------------------------------------------------------------------


class _Payload(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class SessionDescriptor(_Payload):
    session_id: str
    conversation_id: str
    agent_id: str
    agent_name: str
    user_participant_id: str
    agent_participant_id: str
    thread_id: str | None = None
    status: Literal["active", "idle", "ended"] | None = None


class MessageContent(_Payload):
    text: str
    structured_response: dict[str, Any] | None = None  # an agent reply's record


class ConversationMessage(_Payload):
    id: str
    direction: Literal["inbound", "outbound"]
    content: MessageContent
    created_at: datetime


class MessagesPage(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    messages: list[ConversationMessage]
    next_cursor: str | None
    has_more: bool

    def wire(self) -> dict[str, Any]:
        # nextCursor is always present (null on the last page), so no exclude_none here;
        # a message's structuredResponse is there only when it has one.
        page = self.model_dump(by_alias=True, mode="json")
        for message in page["messages"]:
            if message["content"]["structuredResponse"] is None:
                del message["content"]["structuredResponse"]
        return page


# ----------------------------------------------------------------------------------------
# Outbound events
# ----------------------------------------------------------------------------------------


def _event(type_: str, request_id: str | None, **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"type": type_}
    if request_id is not None:
        event["requestId"] = request_id
    event.update(fields)
    event["timestamp"] = now_ms()
    return event


def error(request_id: str | None, code: str, message: str) -> dict[str, Any]:
    body = {"code": code, "message": message}
    data: dict[str, Any] = {"error": body}
    if request_id is not None:
        data = {"requestId": request_id, "error": body}
    return _event("error", request_id, error=body, data=data)


def pong(request_id: str | None) -> dict[str, Any]:
    event = _event("pong", request_id)
    event["data"] = {"timestamp": event["timestamp"]}
    return event


def immediate_response(
    request_id: str | None, status: int, message: str, data: dict[str, Any]
) -> dict[str, Any]:
    return _event("immediate_response", request_id, status=status, message=message, data=data)


def stream_token(request_id: str, token: str) -> dict[str, Any]:
    return _event(
        "stream_token", request_id, token=token, data={"requestId": request_id, "token": token}
    )


def stream_chunk(request_id: str, node: str, raw_response: dict[str, Any]) -> dict[str, Any]:
    return _event(
        "stream_chunk",
        request_id,
        node=node,
        data={"requestId": request_id, "node": node, "state": {"rawResponse": raw_response}},
    )


def write_confirmation_required(
    request_id: str, tool_id: str, action_description: str
) -> dict[str, Any]:
    return _event(
        "write_confirmation_required",
        request_id,
        data={
            "requestId": request_id,
            "data": {"toolId": tool_id, "actionDescription": action_description},
        },
    )


def interaction_required(
    request_id: str, interaction_id: str, kind: str, spec: dict[str, Any], reason: str
) -> dict[str, Any]:
    return _event(
        "interaction_required",
        request_id,
        data={
            "requestId": request_id,
            "data": {"interactionId": interaction_id, "kind": kind, "spec": spec, "reason": reason},
        },
    )


def interaction_invalid(
    request_id: str, interaction_id: str, kind: str, errors: list[tuple[str, str]]
) -> dict[str, Any]:
    """Values that break the kind's rules: one `{field, message}` per problem (at least one)."""
    return _event(
        "interaction_invalid",
        request_id,
        data={
            "requestId": request_id,
            "data": {
                "interactionId": interaction_id,
                "kind": kind,
                "errors": [{"field": f, "message": m} for f, m in errors],
                "message": "Some fields need attention.",
            },
        },
    )


class Usage(_Payload):
    cost_usd: float
    prompt_tokens: int
    completion_tokens: int


class Citation(_Payload):
    id: str
    title: str
    snippet: str = Field(max_length=280)
    score: float
    url: str | None = None


ResolutionStatus = Literal[
    "resolved", "in_progress", "requires_escalation", "needs_more_info", "blocked"
]


class AgentResponse(_Payload):
    response_parts: list[str]
    customer_happiness_score: float = 0.5
    needs_satisfaction_score: float = 0.5
    request_summary: str = ""
    resolution_status: ResolutionStatus = "in_progress"
    suggested_next_actions: list[str] = Field(default_factory=list)


class EventualData(_Payload):
    message_id: str
    response: AgentResponse
    needs_escalation: bool = False
    escalation_reason: str | None = None
    usage: Usage
    citations: list[Citation] | None = None

    def wire(self) -> dict[str, Any]:
        # Only `escalationReason`, `citations` and `url` are omitted when empty; the agent
        # response keeps its empty strings and lists.
        data = self.model_dump(
            by_alias=True, mode="json", exclude={"citations", "escalation_reason"}
        )
        if self.escalation_reason is not None:
            data["escalationReason"] = self.escalation_reason
        if self.citations:
            data["citations"] = [c.wire() for c in self.citations]
        return data


class RecordedToolCall(_Payload):
    id: str
    name: str
    arguments: dict[str, Any] | str
    is_error: bool | None = None  # with `result`: absent when the tool did not return
    result: Any = None
    iteration: int | None = None  # the model call that asked for it (index into `texts`)


class RecordedDecision(_Payload):
    kind: str
    tool_call_id: str
    tool: str
    outcome: str
    description: str | None = None
    decided_by: Literal["visitor", "team"] | None = None  # an approval's decider


class StructuredResponse(_Payload):
    """`content.structuredResponse` of an agent reply in `get_conversation_messages`."""

    status: Literal["completed", "cancelled", "failed"]
    resolution_status: ResolutionStatus
    needs_escalation: bool
    escalation_reason: str | None = None
    truncated: Literal["length", "budget"] | None = None
    citations: list[Citation]
    tool_calls: list[RecordedToolCall]
    decisions: list[RecordedDecision]
    texts: list[str] | None = None  # each model call's text, when the reply called tools


def eventual_response(request_id: str, payload: EventualData) -> dict[str, Any]:
    return _event(
        "eventual_response",
        request_id,
        status=200,
        data={"requestId": request_id, "status": 200, "data": payload.wire()},
    )


def cancelled(request_id: str) -> dict[str, Any]:
    return _event(
        "cancelled", request_id, status=499, data={"requestId": request_id, "status": 499}
    )


def turn_event(request_id: str, event: turn.TurnEvent, stream: bool) -> dict[str, Any] | None:
    """The protocol event for one item of a turn's stream (None: not shown when the
    client asked for `stream: false`, which hides tokens and tool chunks)."""
    match event:
        case turn.Token(text=text):
            return stream_token(request_id, text) if stream else None
        case turn.Reset(attempt=attempt):
            reset = {"reset": {"attempt": attempt}}
            return stream_chunk(request_id, "stream_reset", reset) if stream else None
        case turn.ToolCallStarted(name=name, arguments=arguments):
            call = {"toolCall": {"name": name, "arguments": arguments}}
            return stream_chunk(request_id, name, call) if stream else None
        case turn.ToolResult(name=name, is_error=is_error, result=result):
            outcome = {"toolResult": {"name": name, "isError": is_error, "result": result}}
            if event.description is not None:  # an approver changed the action: what ran
                outcome["toolResult"]["actionDescription"] = event.description
            return stream_chunk(request_id, name, outcome) if stream else None
        case turn.ApprovalAsked(tool_name=tool_name, description=description):
            return write_confirmation_required(request_id, tool_name, description)
        case turn.InteractionAsked():
            return interaction_required(
                request_id, event.interaction_id, event.interaction, event.spec, event.reason
            )
        case turn.Done():
            return eventual_response(request_id, _eventual_data(event))
        case turn.Failed(code=code, message=message):
            return error(request_id, code, message)
        case turn.Cancelled():
            return cancelled(request_id)


def _citation(c: turn.Citation) -> Citation:
    return Citation(id=c.id, title=c.title, snippet=c.snippet, score=c.score, url=c.url)


def _eventual_data(done: turn.Done) -> EventualData:
    escalated = done.escalation_reason is not None
    return EventualData(
        message_id=done.message_id,
        response=AgentResponse(
            response_parts=[done.text],
            resolution_status="requires_escalation" if escalated else "in_progress",
        ),
        needs_escalation=escalated,
        escalation_reason=done.escalation_reason,
        usage=Usage(
            cost_usd=done.usage.cost_usd,
            prompt_tokens=done.usage.prompt_tokens,
            completion_tokens=done.usage.completion_tokens,
        ),
        citations=[_citation(c) for c in done.citations] or None,
    )


def structured_response(record: ReplyRecord) -> dict[str, Any]:
    """An agent reply's record as `content.structuredResponse`: the lists always present,
    `escalationReason` and `truncated` only when they apply; a tool call carries `isError`
    and `result` only once it returned."""
    escalated = record.escalation_reason is not None
    return StructuredResponse(
        status=record.status,
        resolution_status="requires_escalation" if escalated else "in_progress",
        needs_escalation=escalated,
        escalation_reason=record.escalation_reason,
        truncated=record.truncated,
        citations=[_citation(c) for c in record.citations],
        tool_calls=[
            RecordedToolCall(
                id=c.id,
                name=c.name,
                arguments=c.arguments,
                is_error=c.is_error,
                result=c.result,
                iteration=c.iteration,
            )
            for c in record.tool_calls
        ],
        decisions=[
            RecordedDecision(
                kind=d.kind,
                tool_call_id=d.tool_call_id,
                tool=d.tool,
                outcome=d.outcome,
                description=d.description,
                decided_by=d.decided_by,
            )
            for d in record.decisions
        ],
        texts=record.texts or None,
    ).wire()
