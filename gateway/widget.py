"""The embeddable widget's public side: each agent's widget profile (its name, greeting,
starter questions and accent colour, and the tools' customer-facing labels), readable by the
sites its embed policy allows.

The widget runs on the host page and opens the WebSocket from there, so the embed policy
(origins, a signed authContext) applies to it as to any client; this endpoint answers a
cross-origin read only for an origin the policy allows, and not at all for an agent that
`PARLEY_WIDGET_AUTH_STRICT` would refuse.
"""

from __future__ import annotations

import re
from dataclasses import asdict

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.services import Services
from parley.protocol import MAX_ID
from parley.storage import agent_widget, sessions, tool_labels
from parley.widget_auth import origin_allowed

_AGENT_ID = re.compile(r"^[\w.:-]+$")


def _not_found() -> JSONResponse:
    return JSONResponse({"error": "no such agent"}, status_code=404)


async def agent_profile(request: Request) -> Response:
    services: Services = request.app.state.services
    agent_id = request.path_params["agent_id"]
    if len(agent_id) > MAX_ID or not _AGENT_ID.match(agent_id):
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
            return JSONResponse({"error": "this site may not embed this agent"}, 403)
        headers["Access-Control-Allow-Origin"] = origin
    body = {"agentId": agent.id, "name": agent.name, **asdict(profile), "toolLabels": labels}
    return JSONResponse(body, headers=headers)


routes = [Route("/widget/agents/{agent_id}", agent_profile, methods=["GET"])]
