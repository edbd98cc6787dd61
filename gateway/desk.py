"""The approvals desk: team members decide parked writes that are theirs to decide.

`GET /api/approvals?status=pending` lists the caller's organization's pending approvals
whose tool names one of the caller's roles among its approvers (the nearest deadline first,
each with the tool, its sentence, arguments and schema, the requester, the deadline and the
conversation's last messages, each cut to 500 characters). `POST
/api/approvals/{id}/decision {approved, arguments?, note?}` decides one: edited `arguments`
are validated against the tool's schema (422 with the errors, nothing decided), the decision
is one guarded UPDATE (of concurrent deciders, the visitor's confirm and the expiry, exactly
one wins; the others get 409), bound by a hash to the requested and approved arguments, then
signalled to the same durable turn, which goes on where it parked (the visitor's open socket
sees the rest of it).

Four eyes: nobody decides or extends their own request. A principal who is the approval's
requester (its session's verified user id, or the principal that owns the session, in the
same organization) gets 403 and decides nothing; the listing shows the item marked
`ownRequest`.

The listing carries its set's `version`; `?wait=25&since=<version>` makes it a long poll,
answered as soon as the set differs (woken by PostgreSQL NOTIFY through `desk_watch`).
Every answer is `Cache-Control: no-store`.

All need a JWT (PARLEY_AUTH=jwt, `Authorization: Bearer`); with identity off they answer
404, as if they did not exist.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, TypeVar

import jsonschema
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
)
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.admin import Refused, parse_body, read_body
from gateway.approvals import VERDICTS
from gateway.auth import InvalidToken, principal_of
from gateway.reconciler import Decisions
from gateway.services import Services
from gateway.socket_limits import client_key
from gateway.widget import page
from parley.identity import Principal
from parley.logs import get_logger
from parley.storage import approvals
from parley.tools import VISITOR
from parley.turn.types import Extension
from workflows.turn import TurnWorkflow

log = get_logger(__name__)

M = TypeVar("M", bound=BaseModel)
MAX_BODY = 64 * 1024
MAX_NOTE = 2000
MAX_LIST = 200


MAX_EXTEND_SECONDS = 7 * 24 * 3600
MAX_WAIT = 25  # a long poll's longest wait, in seconds (below common proxies' idle timeouts)
_VERSION = re.compile(r"[0-9a-f]{1,64}")
OWN_REQUEST = "this is your own request: a colleague must decide or extend it"


class ExtendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: StrictInt = Field(gt=0, le=MAX_EXTEND_SECONDS)


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    approved: StrictBool
    arguments: dict[str, Any] | None = None
    note: str | None = Field(None, max_length=MAX_NOTE)


# Answers carry approvals, arguments and conversation excerpts: no cache keeps them.
_NO_STORE = {"Cache-Control": "no-store"}


def _json(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=_NO_STORE)


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return _json({"error": message, **extra}, status)


async def _approver(request: Request) -> Principal | Response:
    """The caller, a principal with at least one role; else the response to send."""
    services: Services = request.app.state.services
    if services.verifier is None:
        return _error(404, "not found")
    try:
        principal = await principal_of(services.verifier, request)
    except InvalidToken as err:
        log.info("desk: invalid token", reason=str(err))
        principal = None
    if principal is None:
        return _error(401, "a valid bearer token is required")
    if not _roles(principal):
        return _error(403, "your token carries no role that may approve")
    return principal


def _roles(principal: Principal) -> list[str]:
    """The principal's roles that can name approvers (never the visitor's own name)."""
    return [role for role in principal.roles if role != VISITOR]


def _pending_json(p: approvals.Pending, principal: Principal) -> dict[str, Any]:
    return {
        "id": p.id,
        "tool": p.tool_name,
        "sentence": p.description,
        "arguments": p.arguments,
        "schema": p.parameters,
        "approvers": p.approvers,
        "requester": p.requester,
        "conversationId": p.conversation_id,
        "requestedAt": p.created_at.isoformat(),
        "deadline": p.deadline.isoformat(),
        "excerpt": p.excerpt,
        "ownRequest": p.requested_by(principal.org, principal.subject),
    }


async def list_approvals(request: Request) -> Response:
    """The pending approvals, with their set's `version`; with `wait` and `since` (a version
    seen before), a long poll: it answers when the set differs from `since`, at once or
    when woken by a change (PostgreSQL NOTIFY), else after `wait` seconds (at most 25)."""
    principal = await _approver(request)
    if isinstance(principal, Response):
        return principal
    query = request.query_params
    if query.get("status", "pending") != "pending":
        return _error(400, "status must be pending")
    limit = _number(query.get("limit", "100"))
    if limit is None or not 1 <= limit <= MAX_LIST:
        return _error(400, f"limit must be a number from 1 to {MAX_LIST}")
    wait = _number(query.get("wait", "0"))
    if wait is None:
        return _error(400, f"wait must be a number of seconds (at most {MAX_WAIT} are waited)")
    since = query.get("since")
    if since is not None and not _VERSION.fullmatch(since):
        return _error(400, "since must be a version from an earlier answer")
    services: Services = request.app.state.services
    roles = _roles(principal)
    if wait > 0 and since is not None:
        watch = services.approval_watch
        who = f"{principal.org}\x00{principal.subject}"
        with watch.admit(who, client_key(request.client)) as admitted:
            if not admitted:
                refused = _error(429, "too many waiting requests; try again in 5 s")
                refused.headers["Retry-After"] = "5"
                return refused
            if not await _until_changed(request, principal.org, roles, limit, since, wait):
                return Response(status_code=204)  # nobody is listening any more
    async with services.pool.connection() as conn:
        found = await approvals.pending_for(conn, principal.org, roles, limit=limit)
    return _json(
        {
            "org": principal.org,
            "version": approvals.pending_version([(p.id, p.deadline) for p in found]),
            "approvals": [_pending_json(p, principal) for p in found],
        }
    )


def _number(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 6 else None


async def _until_changed(
    request: Request, org: str, roles: list[str], limit: int, since: str, wait: int
) -> bool:
    """Return once the pending set's version is not `since` (checked at once, then at every
    change of the organization's approvals) or after `wait` seconds (at most MAX_WAIT);
    False when the caller left first. Holds no database connection while it waits."""
    services: Services = request.app.state.services
    loop = asyncio.get_running_loop()
    until = loop.time() + min(wait, MAX_WAIT)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        with services.approval_watch.subscribe(org) as woken:
            while not gone.done():
                woken.clear()  # before reading: a change during the read wakes the next wait
                async with services.pool.connection() as conn:
                    now = await approvals.pending_version_for(conn, org, roles, limit=limit)
                left = until - loop.time()
                if now != since or left <= 0:
                    return True
                waiter = asyncio.ensure_future(woken.wait())
                await asyncio.wait(
                    {waiter, gone}, timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
                waiter.cancel()
        return False
    finally:
        gone.cancel()


async def _disconnected(request: Request) -> None:
    """Return when the client closes the request (a closed tab frees its wait at once)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _body(request: Request, model: type[M]) -> M | Response:
    try:
        return parse_body(model, await read_body(request, MAX_BODY))
    except Refused as refused:
        return _error(refused.status, refused.message)


def schema_errors(schema: dict[str, Any], arguments: dict[str, Any]) -> list[dict[str, str]]:
    """Every way `arguments` fails the tool's schema (empty: valid), each with its field."""
    validator = jsonschema.Draft202012Validator(schema)
    return [
        {"field": "/".join(str(p) for p in err.absolute_path), "message": err.message}
        for err in sorted(validator.iter_errors(arguments), key=lambda e: list(e.absolute_path))
    ]


async def decide(request: Request) -> Response:
    principal = await _approver(request)
    if isinstance(principal, Response):
        return principal
    approval_id = request.path_params["approval_id"]
    if len(approval_id) > 64:
        return _error(404, "no such pending approval")
    decision = await _body(request, DecisionIn)
    if isinstance(decision, Response):
        return decision
    if decision.arguments is not None and not decision.approved:
        return _error(400, "arguments: edited arguments go with an approval only")
    services: Services = request.app.state.services
    roles = _roles(principal)
    async with services.pool.connection() as conn:
        pending = await approvals.pending_one(conn, approval_id, principal.org, roles)
        if pending is None:
            if await approvals.decided_in_org(conn, approval_id, principal.org):
                return _error(409, "this approval was decided (or expired) first")
            return _error(404, "no such pending approval")
        if pending.requested_by(principal.org, principal.subject):
            return _error(403, OWN_REQUEST)
        edited = decision.arguments
        if edited is not None:
            if pending.parameters is None:
                return _error(422, "this tool's arguments cannot be edited here")
            errors = schema_errors(pending.parameters, edited)
            if errors:
                return _error(422, "the arguments do not match the tool's schema", errors=errors)
            if edited == pending.arguments:
                edited = None  # approved as asked
        decided_by = f"{principal.subject} ({', '.join(roles)})"
        binding = approvals.decision_hash(
            approval_id=pending.id,
            tool_name=pending.tool_name,
            requested=pending.arguments,
            approved_arguments=edited,
            decision="approved" if decision.approved else "denied",
            decided_by=decided_by,
            note=decision.note,
        )
        claimed = await approvals.claim_at_desk(
            conn,
            pending.id,
            principal.org,
            roles,
            approved=decision.approved,
            decided_by=decided_by,
            arguments=edited,
            note=decision.note,
            binding=binding,
            subject=principal.subject,
        )
    if claimed is None:
        return _error(409, "this approval was decided (or expired) first")
    log.info("desk decision", approval=claimed.approval_id, approved=decision.approved)
    await VERDICTS.deliver(services.temporal, services.pool, claimed)
    return _json(
        {
            "id": claimed.approval_id,
            "decision": "approved" if claimed.approved else "denied",
            "arguments": edited if edited is not None else pending.arguments,
            "edited": edited is not None,
            "decidedBy": decided_by,
            "note": decision.note,
            "decisionHash": binding,
        }
    )


async def extend(request: Request) -> Response:
    """More time for a pending approval: its deadline moves `seconds` later (at most 30 days
    from now), in PostgreSQL (confirms and desk decisions honour it at once) and in the
    turn (its expiry timer): signalled at once, and by the reconciler if that fails."""
    principal = await _approver(request)
    if isinstance(principal, Response):
        return principal
    body = await _body(request, ExtendIn)
    if isinstance(body, Response):
        return body
    services: Services = request.app.state.services
    approval_id = request.path_params["approval_id"]
    roles = _roles(principal)
    async with services.pool.connection() as conn:
        extended = await approvals.extend(
            conn, approval_id, principal.org, roles, body.seconds, subject=principal.subject
        )
        if extended is None:
            if await approvals.decided_in_org(conn, approval_id, principal.org):
                return _error(409, "this approval was decided (or expired) first")
            pending = await approvals.pending_one(conn, approval_id, principal.org, roles)
            if pending is not None and pending.requested_by(principal.org, principal.subject):
                return _error(403, OWN_REQUEST)
            return _error(404, "no such pending approval")
    # Told now, or by the reconciler (any gateway's) if this one fails or dies first.
    await EXTENSIONS.deliver(services.temporal, services.pool, extended)
    log.info("approval extended", approval=extended.approval_id)
    return _json({"id": extended.approval_id, "deadline": extended.deadline.isoformat()})


EXTENSIONS = Decisions[approvals.Extended](
    name="extension",
    signal=lambda e: (
        e.turn_id,
        TurnWorkflow.extend_approval,
        Extension(e.approval_id, e.deadline),
    ),
    mark_delivered=approvals.mark_extension_delivered,
    undelivered=approvals.undelivered_extensions,
)


async def desk_page(_: Request) -> Response:
    """The approvals desk page: team members sign in with a token and decide (under the
    chat page's strict policy: its script and style are files of their own)."""
    return page("desk.html")


routes = [
    Route("/desk", desk_page, methods=["GET"]),
    Route("/api/approvals", list_approvals, methods=["GET"]),
    Route("/api/approvals/{approval_id}/decision", decide, methods=["POST"]),
    Route("/api/approvals/{approval_id}/extend", extend, methods=["POST"]),
]
