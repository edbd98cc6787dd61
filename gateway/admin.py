"""The admin API: knowledge (`POST /admin/documents`, `GET /admin/documents`,
`DELETE /admin/documents/{id}`, and `PUT /admin/users/{id}/groups` for group access lists),
skills (`PUT`, `GET` and `DELETE /admin/skills/{name}`, `GET /admin/skills`), and the human
team's queue of escalated conversations (`GET /admin/escalations`,
`POST /admin/escalations/{id}/resolve`), and the approvals webhook (`PUT`, `GET` and
`DELETE /admin/webhook`).

Guarded by a bearer token (`PARLEY_ADMIN_TOKEN`, at least 32 characters: a shorter one stops
the gateway at start-up); with no token configured the endpoints answer 404, as if they did
not exist. With `PARLEY_ADMIN_PORT` set they are served on a listener of their own
(`admin_app`) and the public one does not have them.

Every request is held to limits before it costs anything: a body larger than
`PARLEY_ADMIN_MAX_BYTES` is refused by its `Content-Length` unread, or, without one, as soon
as it has streamed past the limit (413); ids and access lists have caps (400). Documents are
parsed and chunked in another process under a time limit (see `gateway.parsing`).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway import metrics
from gateway.auth import InvalidToken, principal_of
from gateway.parsing import DocumentRejected, Limits, ParseTimedOut
from gateway.services import Services
from parley import skills
from parley import webhooks as webhook_targets
from parley.knowledge import access, documents
from parley.knowledge.embeddings import load_embedder
from parley.knowledge.types import Access, Document, file_name
from parley.logs import get_logger
from parley.settings import Settings
from parley.skills import Skill
from parley.storage import agent_widget, escalations, sessions, webhooks
from parley.storage import skills as skill_store
from parley.storage.agent_widget import WidgetProfile

log = get_logger(__name__)

MIN_TOKEN_CHARS = 32
MAX_DOCUMENT_ID = 500  # document ids are paths
ADMIN_MAX_BYTES = "PARLEY_ADMIN_MAX_BYTES"
MAX_ID = 256  # user ids, group names, organization ids
MAX_GROUPS = 100  # groups of one user, groups on one document's access list
MAX_USERS = 1000  # users on one document's access list
MAX_TITLE = 500
MAX_SOURCE = 2000

ShortId = Annotated[str, Field(min_length=1, max_length=MAX_ID)]
M = TypeVar("M")


class Refused(Exception):
    """A request the admin API answers with `status` and a JSON `{"error": message}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=MAX_DOCUMENT_ID)
    content: str = Field(min_length=1)
    format: Literal["markdown", "text", "html"] = "markdown"
    title: str | None = Field(None, max_length=MAX_TITLE)
    source: str | None = Field(None, max_length=MAX_SOURCE)  # default: the id; http(s): a url
    org: ShortId | None = None
    public: bool = False
    users: list[ShortId] = Field(default_factory=list, max_length=MAX_USERS)
    groups: list[ShortId] = Field(default_factory=list, max_length=MAX_GROUPS)

    @model_validator(mode="after")
    def _someone_may_read(self) -> DocumentIn:
        if not (self.public or self.users or self.groups):
            raise ValueError("say who may read the document: public, users or groups")
        return self


ToolName = Annotated[str, Field(pattern=skills.NAME_PATTERN)]


class SkillIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=skills.MAX_PROMPT_CHARS)
    tools: list[ToolName] | None = Field(None, max_length=skills.MAX_TOOLS)  # None: all
    org: ShortId | None = None

    @model_validator(mode="after")
    def _says_something(self) -> SkillIn:
        if not self.prompt.strip():
            raise ValueError("a skill's prompt must not be blank")
        return self


MIN_WEBHOOK_SECRET = 32
MAX_WEBHOOK_URL = 2000


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=8, max_length=MAX_WEBHOOK_URL, pattern=r"^https?://\S+$")
    secret: str = Field(min_length=MIN_WEBHOOK_SECRET, max_length=256)
    org: ShortId | None = None


class GroupsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    groups: list[ShortId] = Field(max_length=MAX_GROUPS)
    org: ShortId | None = None


def configuration_problem(settings: Settings) -> str | None:
    """What is wrong with the admin settings, naming the setting (never a token's value);
    the gateway refuses to start on it."""
    token = settings.admin_token.get_secret_value() if settings.admin_token else ""
    if token and len(token) < MIN_TOKEN_CHARS:
        return (
            f"PARLEY_ADMIN_TOKEN is shorter than {MIN_TOKEN_CHARS} characters: set a longer"
            " one (e.g. from `openssl rand -hex 32`), or unset it to turn the admin API off"
        )
    if settings.admin_port is not None and settings.admin_port == settings.port:
        return "PARLEY_ADMIN_PORT must differ from PARLEY_PORT"
    return None


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def authorized(request: Request) -> Response | None:
    """None when the caller may proceed, else the response to send.

    The static token may manage every organization; a JWT whose `role` is the admin role
    (PARLEY_JWT_ADMIN_ROLE) only its own (`request.state.admin_org`)."""
    services: Services = request.app.state.services
    token = services.settings.admin_token
    secret = token.get_secret_value() if token is not None else ""
    if len(secret) < MIN_TOKEN_CHARS:  # unset, or too short to guard anything
        secret = ""
    if not secret and services.verifier is None:
        return _error(404, "not found")
    request.state.admin_org = None
    request.state.admin_subject = None
    presented = request.headers.get("authorization", "")
    if secret and hmac.compare_digest(presented.encode(), f"Bearer {secret}".encode()):
        return None
    try:
        principal = await principal_of(services.verifier, request)
    except InvalidToken:
        principal = None
    if principal is not None and principal.has_role(services.settings.jwt_admin_role):
        request.state.admin_org = principal.org
        request.state.admin_subject = principal.subject
        return None
    return _error(401, "a valid admin bearer token is required")


Handler = Callable[[Request, Services], Awaitable[Response]]


def _admin(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """The endpoint: the token first, then `handler`; a `Refused` becomes its JSON error."""

    async def endpoint(request: Request) -> Response:
        if (denied := await authorized(request)) is not None:
            return denied
        try:
            return await handler(request, request.app.state.services)
        except Refused as refused:
            return _error(refused.status, refused.message)

    return endpoint


async def read_body(request: Request, limit: int, setting: str | None = None) -> bytes:
    """The request body, refused (413) once it is known to exceed `limit` bytes (the
    `setting` that sets it named): by its Content-Length before any of it is read, else
    while it streams in."""
    declared = request.headers.get("content-length")
    named = f" ({setting})" if setting else ""
    too_large = Refused(413, f"the body is larger than {limit} bytes{named}")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise Refused(400, "Content-Length is not a number")
        if int(declared) > limit:
            raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


def parse_body(model: type[M], body: bytes) -> M:
    """`body` as `model`; `Refused` (400) naming the first field that does not fit."""
    try:
        return TypeAdapter(model).validate_json(body)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise Refused(400, f"{where + ': ' if where else ''}{first['msg']}") from None


def _capped(value: str, cap: int, what: str) -> str:
    if not value or len(value) > cap:
        raise Refused(400, f"{what} must be 1 to {cap} characters")
    return value


def _org(request: Request, services: Services, explicit: str | None = None) -> str:
    """The organization asked for; a JWT admin's own, and only that."""
    own: str | None = request.state.admin_org
    org = explicit or request.query_params.get("org") or own or services.settings.org
    if own is not None and org != own:
        raise Refused(403, "an organization's admin manages only that organization")
    return _capped(org, MAX_ID, "org")


def _limits(settings: Settings) -> Limits:
    return Limits(
        seconds=settings.admin_parse_timeout.total_seconds(),
        max_html_depth=settings.admin_max_html_depth,
        max_chunks=settings.admin_max_chunks,
    )


async def put_document(request: Request, services: Services) -> Response:
    settings = services.settings
    doc = parse_body(
        DocumentIn, await read_body(request, settings.admin_max_bytes, ADMIN_MAX_BYTES)
    )
    org = _org(request, services, doc.org)
    try:
        prepared = await services.parser.prepare(
            doc.content, doc.format, doc.title or file_name(doc.source or doc.id), _limits(settings)
        )
    except DocumentRejected as err:
        raise Refused(413, f"{err}; the document was not stored") from None
    except ParseTimedOut as err:
        raise Refused(
            422, f"{err} (PARLEY_ADMIN_PARSE_TIMEOUT); the document was not stored"
        ) from None
    except BrokenProcessPool:
        log.error("the document parser's process died", document=doc.id)
        raise Refused(500, "the document parser stopped; the document was not stored") from None
    except Exception as err:  # what the parser raised, by its type: its message may quote the text
        log.warning("could not parse a document", document=doc.id, error=type(err).__name__)
        raise Refused(422, f"could not read the document ({type(err).__name__})") from None
    access_list = Access(public=doc.public, users=tuple(doc.users), groups=tuple(doc.groups))
    stored = Document(
        doc.id, doc.title or prepared.title, doc.source or doc.id, prepared.text, access_list
    )
    async with services.pool.connection() as conn:
        outcome, chunks = await documents.upsert_document(
            conn, org, stored, load_embedder(settings.embeddings), prepared.chunks
        )
    status = 201 if outcome == "new" else 200
    return JSONResponse({"id": doc.id, "org": org, "outcome": outcome, "chunks": chunks}, status)


async def list_documents(request: Request, services: Services) -> Response:
    org = _org(request, services)
    async with services.pool.connection() as conn:
        rows = await documents.list_documents(conn, org)
    for row in rows:
        row["updated_at"] = row["updated_at"].isoformat()
    return JSONResponse({"org": org, "documents": rows})


async def delete_document(request: Request, services: Services) -> Response:
    doc_id = _capped(request.path_params["doc_id"], MAX_DOCUMENT_ID, "a document id")
    org = _org(request, services)
    async with services.pool.connection() as conn:
        deleted = await documents.delete_document(conn, org, doc_id)
    if not deleted:
        raise Refused(404, f"no document {doc_id!r}")
    return Response(status_code=204)


async def put_user_groups(request: Request, services: Services) -> Response:
    user = _capped(request.path_params["user_id"], MAX_ID, "a user id")
    limit = services.settings.admin_max_bytes
    body = parse_body(GroupsIn, await read_body(request, limit, ADMIN_MAX_BYTES))
    org = _org(request, services, body.org)
    async with services.pool.connection() as conn:
        await access.set_user_groups(conn, org, user, body.groups)
    return JSONResponse({"org": org, "user": user, "groups": sorted(set(body.groups))})


def _skill_name(request: Request) -> str:
    name: str = request.path_params["name"]
    if not skills.valid_name(name):
        raise Refused(400, "a skill name is 1 to 128 letters, digits, '_' or '-'")
    return name


def _skill_json(org: str, skill: Skill) -> dict[str, Any]:
    tools = list(skill.tools) if skill.tools is not None else None
    return {"org": org, "name": skill.name, "prompt": skill.prompt, "tools": tools}


async def put_skill(request: Request, services: Services) -> Response:
    name = _skill_name(request)
    limit = services.settings.admin_max_bytes
    body = parse_body(SkillIn, await read_body(request, limit, ADMIN_MAX_BYTES))
    org = _org(request, services, body.org)
    skill = Skill(name, body.prompt, tuple(body.tools) if body.tools is not None else None)
    async with services.pool.connection() as conn:
        created = await skill_store.save(conn, org, skill)
    return JSONResponse(_skill_json(org, skill), 201 if created else 200)


async def get_skill(request: Request, services: Services) -> Response:
    name = _skill_name(request)
    org = _org(request, services)
    async with services.pool.connection() as conn:
        skill = await skill_store.get(conn, org, name)
    if skill is None:
        raise Refused(404, f"no skill {name!r}")
    return JSONResponse(_skill_json(org, skill))


async def list_skills(request: Request, services: Services) -> Response:
    org = _org(request, services)
    async with services.pool.connection() as conn:
        found = await skill_store.list_skills(conn, org)
    return JSONResponse({"org": org, "skills": [_skill_json(org, s) for s in found]})


async def delete_skill(request: Request, services: Services) -> Response:
    name = _skill_name(request)
    org = _org(request, services)
    async with services.pool.connection() as conn:
        deleted = await skill_store.delete(conn, org, name)
    if not deleted:
        raise Refused(404, f"no skill {name!r}")
    return Response(status_code=204)


MAX_ESCALATIONS = 500


def _escalation(e: escalations.Escalation) -> dict[str, Any]:
    return {
        "id": e.id,
        "conversation_id": e.conversation_id,
        "org": e.org_id,
        "agent_id": e.agent_id,
        "reason": e.reason,
        "status": e.status,
        "escalated_at": e.created_at.isoformat(),
        "updated_at": e.updated_at.isoformat(),
        "resolved_at": e.resolved_at.isoformat() if e.resolved_at else None,
        "resolved_by": e.resolved_by,
    }


async def list_escalations(request: Request, services: Services) -> Response:
    """Conversations handed to a person, the longest waiting first: `?status=open` (the
    default), `resolved` or `all`; `?limit=` up to 500 (default 100)."""
    org = _org(request, services)
    wanted = request.query_params.get("status", "open")
    statuses: dict[str, escalations.EscalationStatus | None] = {
        "open": "open",
        "resolved": "resolved",
        "all": None,
    }
    if wanted not in statuses:
        raise Refused(400, "status must be open, resolved or all")
    limit = request.query_params.get("limit", "100")
    if not (limit.isascii() and limit.isdigit() and 1 <= int(limit) <= MAX_ESCALATIONS):
        raise Refused(400, f"limit must be a number from 1 to {MAX_ESCALATIONS}")
    async with services.pool.connection() as conn:
        found = await escalations.list_escalations(conn, org, statuses[wanted], int(limit))
    return JSONResponse({"org": org, "escalations": [_escalation(e) for e in found]})


async def resolve_escalation(request: Request, services: Services) -> Response:
    """A person picked the conversation up: its escalation leaves the open queue."""
    org = _org(request, services)
    by = request.state.admin_subject or "admin token"
    async with services.pool.connection() as conn:
        resolved = await escalations.resolve(conn, org, request.path_params["escalation_id"], by)
    if resolved is None:
        raise Refused(404, "no such escalation")
    return JSONResponse(_escalation(resolved))


async def _org_agent(request: Request, services: Services) -> tuple[str, str]:
    """The path's agent, registered in the caller's organization (else 404)."""
    agent_id = _capped(request.path_params["agent_id"], MAX_ID, "an agent id")
    org = _org(request, services)
    async with services.pool.connection() as conn:
        agent = await sessions.get_agent(conn, agent_id, org)
    if not agent.registered or agent.org_id != org:
        raise Refused(404, f"no agent {agent_id!r} in organization {org!r}")
    return agent_id, org


async def put_agent_widget(request: Request, services: Services) -> Response:
    agent_id, org = await _org_agent(request, services)
    profile = parse_body(WidgetProfile, await read_body(request, 64 * 1024))
    async with services.pool.connection() as conn:
        await agent_widget.set_profile(conn, agent_id, profile)
    return JSONResponse({"agent": agent_id, "org": org, **asdict(profile)})


async def get_agent_widget(request: Request, services: Services) -> Response:
    agent_id, org = await _org_agent(request, services)
    async with services.pool.connection() as conn:
        profile = await agent_widget.profile(conn, agent_id)
    return JSONResponse({"agent": agent_id, "org": org, **asdict(profile)})


async def put_webhook(request: Request, services: Services) -> Response:
    """The organization's approvals webhook: its URL, and the secret that signs each POST
    (never shown again, never sent)."""
    body = parse_body(WebhookIn, await read_body(request, 16 * 1024))
    org = _org(request, services, body.org)
    # Checked again at each delivery (the name may move); refused here so the admin hears.
    try:
        await webhook_targets.resolve(
            body.url, allow_private=services.settings.webhook_allow_private
        )
    except webhook_targets.PrivateAddress as err:
        raise Refused(400, str(err)) from None
    except OSError:
        raise Refused(400, "the webhook URL's host does not resolve") from None
    async with services.pool.connection() as conn:
        await webhooks.set_webhook(conn, org, body.url, body.secret)
    return JSONResponse({"org": org, "url": body.url})


async def get_webhook(request: Request, services: Services) -> Response:
    org = _org(request, services)
    async with services.pool.connection() as conn:
        hook = await webhooks.webhook(conn, org)
    if hook is None:
        raise Refused(404, "no webhook")
    return JSONResponse({"org": org, "url": hook.url})


async def delete_webhook(request: Request, services: Services) -> Response:
    org = _org(request, services)
    async with services.pool.connection() as conn:
        deleted = await webhooks.delete_webhook(conn, org)
    if not deleted:
        raise Refused(404, "no webhook")
    return Response(status_code=204)


routes = [
    Route("/admin/webhook", _admin(put_webhook), methods=["PUT"]),
    Route("/admin/webhook", _admin(get_webhook), methods=["GET"]),
    Route("/admin/webhook", _admin(delete_webhook), methods=["DELETE"]),
    Route("/admin/agents/{agent_id}/widget", _admin(put_agent_widget), methods=["PUT"]),
    Route("/admin/agents/{agent_id}/widget", _admin(get_agent_widget), methods=["GET"]),
    Route("/admin/documents", _admin(put_document), methods=["POST"]),
    Route("/admin/documents", _admin(list_documents), methods=["GET"]),
    Route("/admin/documents/{doc_id:path}", _admin(delete_document), methods=["DELETE"]),
    Route("/admin/users/{user_id}/groups", _admin(put_user_groups), methods=["PUT"]),
    Route("/admin/skills", _admin(list_skills), methods=["GET"]),
    Route("/admin/skills/{name}", _admin(put_skill), methods=["PUT"]),
    Route("/admin/skills/{name}", _admin(get_skill), methods=["GET"]),
    Route("/admin/skills/{name}", _admin(delete_skill), methods=["DELETE"]),
    Route("/admin/escalations", _admin(list_escalations), methods=["GET"]),
    Route(
        "/admin/escalations/{escalation_id}/resolve",
        _admin(resolve_escalation),
        methods=["POST"],
    ),
]


def admin_app(gateway: Starlette) -> Starlette:
    """`/admin` (and the gateway's `/metrics`) alone, for a listener of its own. It shares
    the gateway app's state, so it uses the services the gateway's lifespan opens (serve it
    once that has run)."""
    app = Starlette(routes=[*routes, *metrics.routes])
    app.state = gateway.state
    return app
