"""Action handlers: one async function per protocol action, looked up by name.

A handler validates its frame into a `parley.protocol` model, does its work, and answers
through the connection's outbox. It signals a protocol-level refusal by raising
`ProtocolError`; `dispatch` turns that, a validation failure, or an unexpected exception
into the matching `error` event, so no frame can drop the socket.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout
from pydantic import BaseModel, ValidationError

from gateway.outbox import Outbox
from gateway.services import Services
from parley import protocol
from parley.logs import get_logger
from parley.protocol import ErrorCode, ProtocolError
from parley.storage import messages, sessions
from parley.widget_auth import origin_allowed, verify_auth_context

log = get_logger(__name__)


@dataclass
class Connection:
    """What a handler knows about the socket it serves."""

    id: str
    services: Services
    outbox: Outbox
    origin: str | None
    # Turns relayed to this socket, by turn id (see gateway.turns.Relay).
    relays: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """Who is on this socket, for audit records."""
        return f"connection {self.id}" + (f" from {self.origin}" if self.origin else "")

    async def close(self) -> None:
        """Stop relaying (the turns themselves go on) and stop the writer."""
        for relay in list(self.relays.values()):
            await relay.stop()
        self.relays.clear()
        await self.outbox.aclose()


Handler = Callable[[Connection, Any], Awaitable[None]]
_HANDLERS: dict[str, tuple[type[BaseModel], Handler]] = {}


def action(name: str, model: type[BaseModel]) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        _HANDLERS[name] = (model, fn)
        return fn

    return register


async def dispatch(conn: Connection, frame: Any) -> None:
    """Answer one decoded frame; never raises."""
    if not isinstance(frame, dict):
        conn.outbox.send(
            protocol.error(None, ErrorCode.VALIDATION_ERROR, "frame must be a JSON object")
        )
        return
    raw_request_id = frame.get("requestId")
    request_id = raw_request_id if isinstance(raw_request_id, str) else None
    name = frame.get("action")
    if name is None:
        conn.outbox.send(
            protocol.error(request_id, ErrorCode.VALIDATION_ERROR, "missing 'action' field")
        )
        return
    entry = _HANDLERS.get(name) if isinstance(name, str) else None
    if entry is None:
        conn.outbox.send(
            protocol.error(
                request_id, ErrorCode.UNSUPPORTED_ACTION, f"action '{name}' is not supported"
            )
        )
        return
    model, handler = entry
    try:
        await handler(conn, model.model_validate(frame))
    except ValidationError as err:
        message = protocol.describe_validation_error(err)
        conn.outbox.send(protocol.error(request_id, ErrorCode.VALIDATION_ERROR, message))
    except ProtocolError as err:
        conn.outbox.send(protocol.error(request_id, err.code, err.message))
    except (psycopg.OperationalError, PoolTimeout):
        log.exception("storage unavailable", action=name, request_id=request_id)
        conn.outbox.send(
            protocol.error(request_id, ErrorCode.STORAGE_ERROR, "storage is unavailable")
        )
    except Exception:
        log.exception("action failed", action=name, request_id=request_id, conn=conn.id)
        conn.outbox.send(protocol.error(request_id, ErrorCode.INTERNAL_ERROR, "internal error"))


def _session_descriptor(s: sessions.SessionRecord, *, full: bool) -> dict[str, Any]:
    return protocol.SessionDescriptor(
        session_id=s.id,
        conversation_id=s.conversation_id,
        agent_id=s.agent_id,
        agent_name=s.agent_name,
        user_participant_id=s.user_participant_id,
        agent_participant_id=s.agent_participant_id,
        thread_id=s.conversation_id if full else None,
        status=s.status if full else None,  # type: ignore[arg-type]
    ).wire()


async def require_session(conn: Connection, session_id: str) -> sessions.SessionRecord:
    async with conn.services.pool.connection() as db:
        session = await sessions.get_session(db, session_id)
    if session is None:
        raise ProtocolError(ErrorCode.SESSION_NOT_FOUND, f"session '{session_id}' not found")
    return session


@action("ping", protocol.Action)
async def ping(conn: Connection, req: protocol.Action) -> None:
    conn.outbox.send(protocol.pong(req.request_id))


@action("create_conversation_session", protocol.CreateSession)
async def create_conversation_session(conn: Connection, req: protocol.CreateSession) -> None:
    settings = conn.services.settings
    async with conn.services.pool.connection() as db:
        agent = await sessions.get_agent(db, req.agent_id, settings.org)
    user_id = None
    if agent.policy is None:
        if settings.widget_auth_strict:
            raise ProtocolError(
                ErrorCode.AGENT_NOT_AUTHORIZED, "this agent is not registered for embedding"
            )
    else:
        if not origin_allowed(agent.policy.allowed_origins, conn.origin):
            raise ProtocolError(
                ErrorCode.ORIGIN_NOT_ALLOWED, "this origin is not allowed to embed this agent"
            )
        if req.auth_context is not None:
            context = protocol.AuthContext.parse(req.auth_context)
            user_id = verify_auth_context(agent.policy.auth_key, context, int(time.time()))
            if user_id is None:
                raise ProtocolError(
                    ErrorCode.AUTH_CONTEXT_INVALID, "authContext signature failed verification"
                )
    new = sessions.NewSession(
        agent=agent,
        user_name=req.user_name,
        user_email=req.user_email,
        browser_fingerprint=req.browser_fingerprint,
        metadata=req.metadata,
        supports=req.supports,
        user_id=user_id,
        origin=conn.origin,
        resume_conversation_id=req.conversation_id,
    )
    async with conn.services.pool.connection() as db:
        session = await sessions.create_session(db, new)
    log.info("session created", session_id=session.id, conversation_id=session.conversation_id)
    conn.outbox.send(
        protocol.immediate_response(
            req.request_id, 200, "Session created", _session_descriptor(session, full=False)
        )
    )


@action("get_session", protocol.SessionAction)
async def get_session(conn: Connection, req: protocol.SessionAction) -> None:
    session = await require_session(conn, req.session_id)
    conn.outbox.send(
        protocol.immediate_response(
            req.request_id, 200, "Session", _session_descriptor(session, full=True)
        )
    )


@action("get_conversation_messages", protocol.GetMessages)
async def get_conversation_messages(conn: Connection, req: protocol.GetMessages) -> None:
    session = await require_session(conn, req.session_id)
    cursor = req.page_cursor
    try:
        async with conn.services.pool.connection() as db:
            page, has_more = await messages.list_messages(
                db, session.conversation_id, limit=req.limit, cursor=cursor
            )
    except messages.UnknownCursor:
        raise ProtocolError(ErrorCode.VALIDATION_ERROR, f"unknown cursor '{cursor}'") from None
    data = protocol.MessagesPage(
        messages=[
            protocol.ConversationMessage(
                id=m.id,
                direction=m.direction,
                content=protocol.MessageContent(text=m.text),
                created_at=m.created_at,
            )
            for m in page
        ],
        next_cursor=page[-1].id if has_more else None,
        has_more=has_more,
    ).wire()
    conn.outbox.send(protocol.immediate_response(req.request_id, 200, "ConversationMessages", data))
