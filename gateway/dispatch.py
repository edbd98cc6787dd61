"""Dispatch: the action table, built from an explicit list of handler groups, and the one
place that turns a frame into a handler call.

A handler validates its frame into a `parley.protocol` model, does its work, and answers
through the connection's outbox. It signals a protocol-level refusal by raising
`ProtocolError`; `Dispatcher.dispatch` turns that, a validation failure, or an unexpected
exception into the matching `error` event, so no frame can drop the socket.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import psycopg
import structlog
from psycopg_pool import PoolTimeout
from pydantic import BaseModel, ValidationError

from gateway.connection import Connection
from parley import protocol
from parley.logs import get_logger, new_reference, session_ref
from parley.protocol import ErrorCode, ProtocolError

log = get_logger(__name__)

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
        request_id = raw_request_id if isinstance(raw_request_id, str) else None
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
        try:
            await action.handler(conn, action.model.model_validate(frame))
        except ValidationError as err:
            message = protocol.describe_validation_error(err)
            conn.outbox.send(protocol.error(request_id, ErrorCode.VALIDATION_ERROR, message))
        except ProtocolError as err:
            conn.outbox.send(protocol.error(request_id, err.code, err.message))
        except (psycopg.OperationalError, PoolTimeout):
            ref = new_reference()
            log.exception("storage unavailable", ref=ref)
            conn.outbox.send(
                protocol.error(
                    request_id, ErrorCode.STORAGE_ERROR, f"storage is unavailable (ref {ref})"
                )
            )
        except Exception:
            ref = new_reference()
            log.exception("action failed", ref=ref)
            conn.outbox.send(
                protocol.error(request_id, ErrorCode.INTERNAL_ERROR, f"internal error (ref {ref})")
            )
