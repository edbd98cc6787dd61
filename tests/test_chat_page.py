"""The web chat as the gateway serves it (no browser): the page at `/`, the widget's loader at
`/widget.js` and the modules they load from `/static/`.

Checked statically: nothing is fetched from another host, every module a site may load is
served with the headers a cross-origin module import needs, no module builds HTML from
strings (model text only ever enters the page as text), and together they still send every
action and handle every event the chat depends on. The browser tests drive all of it.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import httpx
import pytest

from tests.helpers import GatewayServer

# Actions the chat sends, each as `action: "<name>"` in its modules.
ACTIONS = [
    "create_conversation_session",
    "get_session",
    "get_conversation_messages",
    "send_message",
    "confirm_tool_action",
    "submit_interaction",
    "cancel",
    "resume_turn",
    "ping",
]
# Events (and the one chunk node and error codes) the chat must handle by name.
HANDLED = [
    '"stream_token"',
    '"stream_chunk"',
    '"stream_reset"',
    '"write_confirmation_required"',
    '"interaction_required"',
    '"interaction_invalid"',
    '"eventual_response"',
    '"cancelled"',
    '"error"',
    '"NO_ACTIVE_TURN"',
    '"TURN_IN_PROGRESS"',
    '"NO_PENDING_INTERACTION"',
]
URL_ATTRIBUTES = {"src", "href", "srcset", "action", "formaction", "poster", "data", "background"}
# The one absolute URL a module may hold: the SVG namespace, which is a name, not a fetch.
NAMESPACES = {"http://www.w3.org/2000/svg"}
IMPORT = re.compile(r"""(?:^|\n)\s*import\s[^;]*?from\s+["'](\./[\w.-]+)["']""")


class _Page(HTMLParser):
    """Every tag's URL-valued attributes, and whether any script is inline."""

    def __init__(self) -> None:
        super().__init__()
        self.references: list[tuple[str, str, str]] = []
        self.inline_scripts = 0
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in URL_ATTRIBUTES and value is not None:
                self.references.append((tag, name, value))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts += 1


class Served:
    """The page, the loader, and every module reachable from them, as served."""

    def __init__(self) -> None:
        self.page: httpx.Response
        self.parsed = _Page()
        self.loader: httpx.Response
        self.modules: dict[str, httpx.Response] = {}

    @property
    def code(self) -> str:
        return "\n".join(r.text for r in [self.loader, *self.modules.values()])


@pytest.fixture(scope="module")
async def served(gateway: GatewayServer) -> Served:
    out = Served()
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        out.page = await http.get("/")
        out.parsed.feed(out.page.text)
        out.loader = await http.get("/widget.js")
        # The page's module and the one the loader imports, then what they import.
        queue = ["page.js", "chat.js", "chat.css"]
        while queue:
            name = queue.pop()
            if name in out.modules:
                continue
            out.modules[name] = await http.get(f"/static/{name}")
            queue += [m.removeprefix("./") for m in IMPORT.findall(out.modules[name].text)]
    return out


def test_the_page_is_a_shell_for_the_chat_module(served: Served) -> None:
    page = served.page
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.text.lstrip().lower().startswith("<!doctype html>")
    assert '<html lang="' in page.text
    assert '<script type="module" src="static/page.js">' in page.text
    assert served.parsed.inline_scripts == 0
    # Its own scripts, styles and host only: markup that slipped into a reply could not load
    # or run anything.
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy


def test_nothing_comes_from_another_host(served: Served) -> None:
    external = [
        ref
        for ref in served.parsed.references
        if re.match(r"^\s*([a-z][a-z0-9+.-]*:|//)", ref[2], re.I)
        and not ref[2].lower().startswith(("#", "data:"))
    ]
    assert not external, f"the page loads from elsewhere: {external}"
    assert not re.search(r"https?://", served.page.text, re.I)
    for name, response in [("widget.js", served.loader), *served.modules.items()]:
        # (Comments show the embed snippet with a placeholder host: https://<parley>/.)
        urls = set(re.findall(r"https?://\w[^\s\"'`)<]*", response.text)) - NAMESPACES
        assert not urls, f"{name} names another host: {urls}"
        assert "@import" not in response.text, name


def test_modules_load_from_any_site(served: Served) -> None:
    """A site that embeds the widget imports the chat module across origins."""
    assert set(served.modules) >= {
        "page.js",
        "chat.js",
        "chat.css",
        "client.js",
        "markdown.js",
        "cards.js",
        "dom.js",
    }
    for name, response in [("widget.js", served.loader), *served.modules.items()]:
        assert response.status_code == 200, name
        kind = "text/css" if name.endswith(".css") else "text/javascript"
        assert response.headers["content-type"].startswith(kind), name
        assert response.headers["access-control-allow-origin"] == "*", name
        assert response.headers["cache-control"] == "public, max-age=300", name
        assert response.headers["x-content-type-options"] == "nosniff", name


async def test_only_the_chat_files_are_served(gateway: GatewayServer) -> None:
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        favicon = await http.get("/favicon.ico")
        svg = await http.get("/static/favicon.svg")
        missing = [
            (await http.get(path)).status_code
            for path in (
                "/static/nope.js",
                "/static/index.html",
                "/static/..%2fwidget.py",
                "/static/%2e%2e%2fapp.py",
                "/static/CHAT.JS",
            )
        ]
    assert favicon.status_code == 200 and favicon.headers["content-type"] == "image/x-icon"
    assert favicon.content[:4] == b"\x00\x00\x01\x00"  # an ICO
    assert svg.status_code == 200 and svg.headers["content-type"] == "image/svg+xml"
    assert missing == [404] * len(missing)


def test_text_never_becomes_markup(served: Served) -> None:
    """Model and visitor text enter the page through textContent and text nodes only."""
    for name, response in [("widget.js", served.loader), *served.modules.items()]:
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in response.text, f"{name} uses {sink}"
        assert "new Function" not in response.text, name
    markdown = served.modules["markdown.js"].text
    assert 'rel = "noopener noreferrer"' in markdown and 'target = "_blank"' in markdown
    assert '"http:", "https:", "mailto:"' in markdown  # the only link schemes


def test_the_chat_speaks_the_protocol(served: Served) -> None:
    code = served.code
    missing = [a for a in ACTIONS if not re.search(rf"""action:\s*["']{a}["']""", code)]
    assert not missing, f"the chat no longer sends: {missing}"
    unhandled = [name for name in HANDLED if name not in code]
    assert not unhandled, f"the chat no longer handles: {unhandled}"
    # The fields the protocol requires on what it sends, and what it declares it can show.
    for field in ("requestId", "sessionId", "approved", "conversationId", "agentId", "message"):
        assert field in code, field
    for field in ("interactionId", "declined", "authContext", "identity_form", "choice_chips"):
        assert field in code, field
    # What it shows from a reply's record after a reload, and from an escalated turn.
    for field in ("structuredResponse", "toolCalls", "decisions", "citations", "needsEscalation"):
        assert field in code, field
    # A refresh resumes the same conversation; the socket is the Parley server's /ws.
    assert "localStorage" in code
    assert 'new URL("ws", this.base)' in code and '"wss:"' in code


def test_the_loader_embeds_with_one_script_tag(served: Served) -> None:
    loader = served.loader.text
    assert "document.currentScript" in loader and "data-agent-id" in loader
    assert "attachShadow" in loader  # the host page's CSS stays out
    assert 'import(base + "static/chat.js")' in loader
    assert "window.ParleyWidget" in loader and "authContext" in loader
