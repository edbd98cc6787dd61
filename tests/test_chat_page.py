"""The demo chat page at `/`: served as HTML, self-contained, and speaking the protocol.

A static check of the page the gateway serves (no browser): nothing is fetched from another
host, and the inline script still sends every action the page depends on and handles the
events it must show.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import httpx
import pytest

from tests.helpers import GatewayServer

# Actions the page sends, each as `action: "<name>"` in its script.
ACTIONS = [
    "create_conversation_session",
    "get_session",
    "get_conversation_messages",
    "send_message",
    "confirm_tool_action",
    "submit_interaction",
    "cancel",
    "resume_turn",
]
# Events (and the one chunk node and error code) the page must handle by name.
HANDLED = [
    '"stream_token"',
    '"stream_chunk"',
    '"stream_reset"',
    '"write_confirmation_required"',
    '"interaction_required"',
    '"interaction_invalid"',
    '"NO_PENDING_INTERACTION"',
    '"eventual_response"',
    '"cancelled"',
    '"error"',
    '"NO_ACTIVE_TURN"',
]
URL_ATTRIBUTES = {"src", "href", "srcset", "action", "formaction", "poster", "data", "background"}


class _Page(HTMLParser):
    """Every tag's URL-valued attributes, and the inline scripts' text."""

    def __init__(self) -> None:
        super().__init__()
        self.references: list[tuple[str, str, str]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in URL_ATTRIBUTES and value is not None:
                self.references.append((tag, name, value))
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data


@pytest.fixture(scope="module")
async def page(gateway: GatewayServer) -> tuple[httpx.Response, _Page]:
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        response = await http.get("/")
    parsed = _Page()
    parsed.feed(response.text)
    return response, parsed


def test_served_as_html(page: tuple[httpx.Response, _Page]) -> None:
    response, _ = page
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.text.lstrip().lower().startswith("<!doctype html>")
    assert '<html lang="' in response.text


def test_self_contained(page: tuple[httpx.Response, _Page]) -> None:
    response, parsed = page
    external = [
        ref
        for ref in parsed.references
        if re.match(r"^\s*([a-z][a-z0-9+.-]*:|//)", ref[2], re.I)
        and not ref[2].lower().startswith(("#", "data:"))
    ]
    assert not external, f"the page loads from elsewhere: {external}"
    assert not re.search(r"<script[^>]*\bsrc=", response.text, re.I), "scripts must be inline"
    assert not re.search(r"<link[^>]*\bstylesheet\b", response.text, re.I), "styles must be inline"
    assert "@import" not in response.text
    # No absolute web URL anywhere: not in markup, styles, or a fetch() in the script.
    assert not re.search(r"https?://", response.text, re.I)


def test_speaks_the_protocol(page: tuple[httpx.Response, _Page]) -> None:
    _, parsed = page
    script = "\n".join(parsed.scripts)
    assert script.strip(), "the page has no inline script"
    missing = [a for a in ACTIONS if not re.search(rf"""action:\s*["']{a}["']""", script)]
    assert not missing, f"the page no longer sends: {missing}"
    unhandled = [name for name in HANDLED if name not in script]
    assert not unhandled, f"the page no longer handles: {unhandled}"
    # The socket is the gateway's /ws on the page's own host, wss under https.
    assert '"/ws"' in script or "/ws`" in script
    assert "location.host" in script and '"wss:"' in script
    # The fields the protocol requires on what it sends.
    for field in ("requestId", "sessionId", "approved", "conversationId", "agentId", "message"):
        assert field in script, field
    # What it shows from a reply's record after a reload, and from an escalated turn.
    for field in ("structuredResponse", "toolCalls", "decisions", "citations", "needsEscalation"):
        assert field in script, field
    # It renders forms and choice chips, and says so when it opens a session.
    for field in ("supports", '"identity_form"', '"choice_chips"', "interactionId", "declined"):
        assert field in script, field
    # A refresh resumes the same conversation.
    assert "localStorage" in script
