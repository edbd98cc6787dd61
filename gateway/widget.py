"""The web chat's public side: the chat page at `/`, the embeddable widget's loader
(`/widget.js`) and its modules (`/static/*`), and each agent's widget profile (its name,
greeting, starter questions and accent colour, and the tools' customer-facing labels),
readable by the sites its embed policy allows (its refusals, readable by any: the widget
logs their reason).

The widget runs on the host page and opens the WebSocket from there, so the embed policy
(origins, a signed authContext) applies to it as to any client; the profile endpoint answers
a cross-origin read only for an origin the policy allows, and not at all for an agent that
`PARLEY_WIDGET_AUTH_STRICT` would refuse. The scripts and styles are public: any site may load
them (`Access-Control-Allow-Origin: *`, which module scripts need across origins).
"""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from gateway.services import Services
from parley.protocol import MAX_ID
from parley.storage import agent_widget, sessions, tool_labels
from parley.widget_auth import origin_allowed

# What an agent id may be here; anything else is answered as an unknown agent, unqueried.
_AGENT_ID = re.compile(r"[\w.:-]+")

STATIC = Path(__file__).parent / "static"
_STATIC_NAME = re.compile(r"^[a-z0-9-]+\.(js|css|svg|ico)$")
_TYPES = {
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "svg": "image/svg+xml",
    "ico": "image/x-icon",
}
# Files have no version in their names: caches revalidate after five minutes (ETag).
_PUBLIC = {
    "Access-Control-Allow-Origin": "*",
    "Cross-Origin-Resource-Policy": "cross-origin",
    "Cache-Control": "public, max-age=300",
    "X-Content-Type-Options": "nosniff",
}
# The page runs only its own scripts and styles, talks only to its own host, and fetches
# nothing from anywhere else; a model's reply that slipped markup past the renderer still
# could not load or run anything.
_PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": _PAGE_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def page(name: str) -> FileResponse:
    """One of the gateway's own HTML pages (the chat, the desk), under the strict policy:
    no inline script or style, no other host, never framed, no referrer."""
    return FileResponse(STATIC / name, media_type="text/html", headers=_PAGE_HEADERS)


def _static(name: str) -> Response:
    path = STATIC / name
    if not _STATIC_NAME.match(name) or not path.is_file():
        return Response("not found", status_code=404, media_type="text/plain")
    return FileResponse(path, media_type=_TYPES[name.rsplit(".", 1)[1]], headers=_PUBLIC)


async def chat_page(_: Request) -> Response:
    """The full-page chat: a shell that mounts the widget's chat module."""
    return page("index.html")


async def static_file(request: Request) -> Response:
    """`/static/<name>`: the chat's modules, styles and icons."""
    return _static(request.path_params["name"])


async def widget_script(_: Request) -> Response:
    """`/widget.js`: the loader a site embeds with one script tag."""
    return _static("widget.js")


async def favicon(_: Request) -> Response:
    return _static("favicon.ico")


def _refusal(status: int, reason: str) -> JSONResponse:
    """An error answer the widget's cross-origin fetch can read, so the host page's console
    says why (not a CORS error): it says nothing about the agent beyond the refusal."""
    return JSONResponse(
        {"error": reason}, status_code=status, headers={"Access-Control-Allow-Origin": "*"}
    )


def _not_found() -> JSONResponse:
    return _refusal(404, "no such agent")


async def agent_profile(request: Request) -> Response:
    """`GET /widget/agents/{id}`, anonymous: counted per address first (a refusal queries
    nothing), then a malformed id gets the unknown agent's 404 without a query."""
    services: Services = request.app.state.services
    if (refused := services.http_rates.refuse(request)) is not None:
        return refused
    agent_id = request.path_params["agent_id"]
    if len(agent_id) > MAX_ID or not _AGENT_ID.fullmatch(agent_id):
        return _not_found()
    async with services.pool.connection() as conn:
        agent = await sessions.get_agent(conn, agent_id, services.settings.org)
        profile = await agent_widget.profile(conn, agent_id)
        labels = await tool_labels.labels(conn)
    if agent.policy is None and services.settings.widget_auth_strict:
        return _not_found()
    origin = request.headers.get("origin")
    headers = {"Vary": "Origin", "Cache-Control": "public, max-age=60"}
    if origin:
        if agent.policy is not None and not origin_allowed(agent.policy.allowed_origins, origin):
            return _refusal(403, "this site may not embed this agent")
        headers["Access-Control-Allow-Origin"] = origin
    body = {"agentId": agent.id, "name": agent.name, **asdict(profile), "toolLabels": labels}
    return JSONResponse(body, headers=headers)


async def no_agent(request: Request) -> Response:
    """A path under `/widget/agents/` that holds no id (empty, or with a slash): the same
    404 as any malformed id, counted the same."""
    services: Services = request.app.state.services
    return services.http_rates.refuse(request) or _not_found()


routes = [
    Route("/", chat_page, methods=["GET"]),
    Route("/widget.js", widget_script, methods=["GET"]),
    Route("/static/{name}", static_file, methods=["GET"]),
    Route("/favicon.ico", favicon, methods=["GET"]),
    Route("/widget/agents/{agent_id}", agent_profile, methods=["GET"]),
    Route("/widget/agents/{rest:path}", no_agent, methods=["GET"]),
]
