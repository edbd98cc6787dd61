"""Dispatch: the action table, built from an explicit list of handler groups, and the one
place that turns a frame into a handler call.

A handler validates its frame into a `parley.protocol` model, does its work, and answers
through the connection's outbox. It signals a protocol-level refusal by raising
`ProtocolError`; `Dispatcher.dispatch` turns that, a validation failure, or an unexpected
exception into the matching `error` event, so no frame can drop the socket.

Each answered frame of a known action is counted by action and result
(`parley_actions_total`) and, while tracing is on, runs in a span named after its action
(SERVER; `parley.action`, and `error.type` with the error code it answered), except `ping`,
a heartbeat every few seconds per socket. A span is the parent of what the handler does:
`send_message`'s is the root of its turn's trace.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import psycopg
import structlog
from opentelemetry.trace import SpanKind, Status, StatusCode
from psycopg_pool import PoolTimeout
from pydantic import BaseModel, ValidationError

from gateway.connection import Connection
from parley import metrics, protocol, tracing
from parley.logs import get_logger, new_reference, session_ref
from parley.protocol import ErrorCode, ProtocolError

log = get_logger(__name__)

UNTRACED = frozenset({"ping"})
# Answers that are the server's fault (an error status on the span); the others are the
# client's or the state's (a refusal, not a failure).
SERVER_ERRORS = frozenset({ErrorCode.INTERNAL_ERROR, ErrorCode.STORAGE_ERROR})
OK = "ok"

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Action(Generic[M]):
    """One protocol action: its name, the model its frame must fit, and its handler."""

    name: str
    model: type[M]
    handler: Callable[[Connection, M], Awaitable[None]]


class Dispatcher:
    """Answers frames from the actions it was given (a name given twice is a bug)."""

    def __init__(self, *groups: Iterable[Action[Any]]) -> None:
        self.actions: dict[str, Action[Any]] = {}
        for group in groups:
            for action in group:
                if action.name in self.actions:
                    raise ValueError(f"action {action.name!r} is defined twice")
                self.actions[action.name] = action

    async def dispatch(self, conn: Connection, frame: Any) -> None:
        """Answer one decoded frame; never raises. Log lines written while it is handled
        carry the connection, action and requestId (and a reference to the session)."""
        if not isinstance(frame, dict):
            conn.outbox.send(
                protocol.error(None, ErrorCode.VALIDATION_ERROR, "frame must be a JSON object")
            )
            return
        raw_request_id = frame.get("requestId")
        # Echoed in replies and logged: one too long to be valid is neither (its action is
        # refused for it anyway), so a huge id does not come back twice in every error.
        request_id = (
            raw_request_id
            if isinstance(raw_request_id, str) and len(raw_request_id) <= protocol.MAX_REQUEST_ID
            else None
        )
        name = frame.get("action")
        with structlog.contextvars.bound_contextvars(
            conn=conn.id,
            action=name if isinstance(name, str) else None,
            request_id=request_id,
            session=session_ref(frame.get("sessionId")),
        ):
            await self._answer(conn, frame, name, request_id)

    async def _answer(
        self, conn: Connection, frame: dict[str, Any], name: Any, request_id: str | None
    ) -> None:
        if name is None:
            conn.outbox.send(
                protocol.error(request_id, ErrorCode.VALIDATION_ERROR, "missing 'action' field")
            )
            return
        action = self.actions.get(name) if isinstance(name, str) else None
        if action is None:
            conn.outbox.send(
                protocol.error(
                    request_id, ErrorCode.UNSUPPORTED_ACTION, f"action '{name}' is not supported"
                )
            )
            return
        if action.name in UNTRACED:
            result = await self._handle(conn, action, frame, request_id)
        else:
            with tracing.tracer().start_as_current_span(
                action.name,
                kind=SpanKind.SERVER,
                attributes={"parley.action": action.name},
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                result = await self._handle(conn, action, frame, request_id)
                if result != OK:
                    span.set_attribute("error.type", result)
                    if result in SERVER_ERRORS:
                        span.set_status(Status(StatusCode.ERROR, result))
        metrics.ACTIONS.labels(action.name, result).inc()

    async def _handle(
        self, conn: Connection, action: Action[Any], frame: dict[str, Any], request_id: str | None
    ) -> str:
        """Run the handler; returns `ok` or the error code it answered with."""
        try:
            await action.handler(conn, action.model.model_validate(frame))
        except ValidationError as err:
            message = protocol.describe_validation_error(err)
            conn.outbox.send(protocol.error(request_id, ErrorCode.VALIDATION_ERROR, message))
            return ErrorCode.VALIDATION_ERROR
        except ProtocolError as err:
            conn.outbox.send(protocol.error(request_id, err.code, err.message))
            return err.code
        except (psycopg.OperationalError, PoolTimeout):
            ref = new_reference()
            log.exception("storage unavailable", ref=ref)
            conn.outbox.send(
                protocol.error(
                    request_id, ErrorCode.STORAGE_ERROR, f"storage is unavailable (ref {ref})"
                )
            )
            return ErrorCode.STORAGE_ERROR
        except Exception:
            ref = new_reference()
            log.exception("action failed", ref=ref)
            conn.outbox.send(
                protocol.error(request_id, ErrorCode.INTERNAL_ERROR, f"internal error (ref {ref})")
            )
            return ErrorCode.INTERNAL_ERROR
        return OK
