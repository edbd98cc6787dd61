"""The knowledge admin API: `POST /admin/documents`, `GET /admin/documents`,
`DELETE /admin/documents/{id}`, and `PUT /admin/users/{id}/groups` (group access lists).

Guarded by a bearer token (`PARLEY_ADMIN_TOKEN`); with no token configured the endpoints
answer 404, as if they did not exist.
"""

from __future__ import annotations

import hmac
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.services import Services
from parley.knowledge import access, documents
from parley.knowledge.embeddings import load_embedder
from parley.knowledge.types import Access, Document

MAX_DOCUMENT_BYTES = 5 * 1024 * 1024


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=500)
    content: str = Field(min_length=1)
    format: Literal["markdown", "text", "html"] = "markdown"
    title: str | None = None
    source: str | None = None  # defaults to the id; an http(s) URL becomes the citation url
    org: str | None = None
    public: bool = False
    users: list[str] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _someone_may_read(self) -> DocumentIn:
        if not (self.public or self.users or self.groups):
            raise ValueError("say who may read the document: public, users or groups")
        return self


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _authorized(request: Request) -> Response | None:
    """None when the caller may proceed, else the response to send."""
    services: Services = request.app.state.services
    token = services.settings.admin_token
    if token is None or not token.get_secret_value():
        return _error(404, "not found")
    presented = request.headers.get("authorization", "")
    expected = f"Bearer {token.get_secret_value()}"
    if not hmac.compare_digest(presented.encode(), expected.encode()):
        return _error(401, "a valid admin bearer token is required")
    return None


def _org(request: Request, explicit: str | None = None) -> str:
    services: Services = request.app.state.services
    return explicit or request.query_params.get("org") or services.settings.org


async def put_document(request: Request) -> Response:
    if (denied := _authorized(request)) is not None:
        return denied
    body = await request.body()
    if len(body) > MAX_DOCUMENT_BYTES:
        return _error(413, f"documents are limited to {MAX_DOCUMENT_BYTES} bytes")
    try:
        doc = DocumentIn.model_validate_json(body)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return _error(422, f"{where + ': ' if where else ''}{first['msg']}")
    services: Services = request.app.state.services
    extracted = await services.parser.extract(doc.content, doc.format, doc.title or doc.id)
    access = Access(public=doc.public, users=tuple(doc.users), groups=tuple(doc.groups))
    org = _org(request, doc.org)
    async with services.pool.connection() as conn:
        outcome, chunks = await documents.upsert_document(
            conn,
            org,
            Document(
                doc.id, doc.title or extracted.title, doc.source or doc.id, extracted.text, access
            ),
            load_embedder(services.settings.embeddings),
        )
    status = 201 if outcome == "new" else 200
    return JSONResponse({"id": doc.id, "org": org, "outcome": outcome, "chunks": chunks}, status)


async def list_documents(request: Request) -> Response:
    if (denied := _authorized(request)) is not None:
        return denied
    services: Services = request.app.state.services
    org = _org(request)
    async with services.pool.connection() as conn:
        rows = await documents.list_documents(conn, org)
    for row in rows:
        row["updated_at"] = row["updated_at"].isoformat()
    return JSONResponse({"org": org, "documents": rows})


async def delete_document(request: Request) -> Response:
    if (denied := _authorized(request)) is not None:
        return denied
    services: Services = request.app.state.services
    doc_id = request.path_params["doc_id"]
    async with services.pool.connection() as conn:
        deleted = await documents.delete_document(conn, _org(request), doc_id)
    if not deleted:
        return _error(404, f"no document {doc_id!r}")
    return Response(status_code=204)


class GroupsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    groups: list[str]
    org: str | None = None


async def put_user_groups(request: Request) -> Response:
    if (denied := _authorized(request)) is not None:
        return denied
    try:
        body = GroupsIn.model_validate_json(await request.body())
    except ValidationError as err:
        return _error(422, err.errors()[0]["msg"])
    services: Services = request.app.state.services
    org, user = _org(request, body.org), request.path_params["user_id"]
    async with services.pool.connection() as conn:
        await access.set_user_groups(conn, org, user, body.groups)
    return JSONResponse({"org": org, "user": user, "groups": sorted(set(body.groups))})


routes = [
    Route("/admin/documents", put_document, methods=["POST"]),
    Route("/admin/documents", list_documents, methods=["GET"]),
    Route("/admin/documents/{doc_id:path}", delete_document, methods=["DELETE"]),
    Route("/admin/users/{user_id}/groups", put_user_groups, methods=["PUT"]),
]
