"""Session actions: `ping`, `create_conversation_session`, `get_session` and
`get_conversation_messages`."""

from __future__ import annotations

import time
from typing import Any

from gateway import limits
from gateway.connection import Connection
from gateway.dispatch import Action
from parley import protocol
from parley.identity import Principal
from parley.logs import get_logger, session_ref
from parley.protocol import ErrorCode, ProtocolError
from parley.storage import messages, sessions
from parley.turn.record import ReplyRecord
from parley.widget_auth import origin_allowed, verify_auth_context

log = get_logger(__name__)


def _session_descriptor(s: sessions.SessionRecord, *, full: bool) -> dict[str, Any]:
    return protocol.SessionDescriptor(
        session_id=s.id,
        conversation_id=s.conversation_id,
        agent_id=s.agent_id,
        agent_name=s.agent_name,
        user_participant_id=s.user_participant_id,
        agent_participant_id=s.agent_participant_id,
        thread_id=s.conversation_id if full else None,
        status=s.status if full else None,
    ).wire()


def may_use(principal: Principal | None, session: sessions.SessionRecord) -> bool:
    """A session with an owner is its owner's alone; one without is a bearer capability."""
    if session.owner_subject is None:
        return True
    return principal is not None and principal.owns(session.owner_org, session.owner_subject)


async def find_session(conn: Connection, session_id: str) -> sessions.SessionRecord | None:
    """The session when this connection may use it. Unknown, expired and someone else's
    are the same None, so each action answers a stranger exactly as it answers a guess."""
    settings = conn.services.settings
    expiry = sessions.Expiry(
        idle_seconds=settings.session_idle_timeout.total_seconds(),
        max_age_seconds=settings.session_max_age.total_seconds(),
    )
    async with conn.services.pool.connection() as db:
        session = await sessions.get_session(db, session_id, expiry)
    if session is None or not may_use(conn.principal, session):
        return None
    return session


async def require_session(conn: Connection, session_id: str) -> sessions.SessionRecord:
    session = await find_session(conn, session_id)
    if session is None:
        raise ProtocolError(ErrorCode.SESSION_NOT_FOUND, f"session '{session_id}' not found")
    return session


async def ping(conn: Connection, req: protocol.Action) -> None:
    conn.outbox.send(protocol.pong(req.request_id))


async def create_conversation_session(conn: Connection, req: protocol.CreateSession) -> None:
    settings = conn.services.settings
    principal = conn.principal
    async with conn.services.pool.connection() as db:
        agent = await sessions.get_agent(
            db, req.agent_id, principal.org if principal else settings.org
        )
    if principal is not None and agent.org_id != principal.org:
        raise ProtocolError(
            ErrorCode.AGENT_NOT_AUTHORIZED, "this agent belongs to another organization"
        )
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
        user_name=principal.name if principal and principal.name else req.user_name,
        user_email=principal.email if principal and principal.email else req.user_email,
        browser_fingerprint=req.browser_fingerprint,
        metadata=req.metadata,
        supports=req.supports,
        # A principal is the requester; otherwise a verified authContext names the user.
        user_id=principal.subject if principal else user_id,
        origin=conn.origin,
        resume_conversation_id=req.conversation_id,
        org_id=principal.org if principal else None,
        owner_subject=principal.subject if principal else None,
    )
    await limits.admit_session(conn)
    async with conn.services.pool.connection() as db:
        session = await sessions.create_session(db, new)
    log.info("session created", session=session_ref(session.id))
    conn.outbox.send(
        protocol.immediate_response(
            req.request_id, 200, "Session created", _session_descriptor(session, full=False)
        )
    )


async def get_session(conn: Connection, req: protocol.SessionAction) -> None:
    session = await require_session(conn, req.session_id)
    conn.outbox.send(
        protocol.immediate_response(
            req.request_id, 200, "Session", _session_descriptor(session, full=True)
        )
    )


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
                content=protocol.MessageContent(
                    text=m.text,
                    structured_response=protocol.structured_response(
                        ReplyRecord.from_json(m.structured)
                    )
                    if m.structured is not None
                    else None,
                ),
                created_at=m.created_at,
            )
            for m in page
        ],
        next_cursor=page[-1].id if has_more else None,
        has_more=has_more,
    ).wire()
    conn.outbox.send(protocol.immediate_response(req.request_id, 200, "ConversationMessages", data))


ACTIONS = (
    Action("ping", protocol.Action, ping),
    Action("create_conversation_session", protocol.CreateSession, create_conversation_session),
    Action("get_session", protocol.SessionAction, get_session),
    Action("get_conversation_messages", protocol.GetMessages, get_conversation_messages),
)
