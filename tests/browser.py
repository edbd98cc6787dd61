"""Real browsers for the page tests: Debian's Chromium driven by Playwright for Python.

Playwright cannot download its own browser here, so Chromium is launched by path
(`PARLEY_CHROMIUM`, default /usr/bin/chromium; `make test` installs it when missing).
Screenshots of the states a test reaches go to `artifacts/screenshots/` (git-ignored), to be
looked at.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Locator, Page, async_playwright, expect

from parley.knowledge import documents
from parley.knowledge.types import Access, Document
from parley.storage import agent_widget, sessions

CHROMIUM = os.environ.get("PARLEY_CHROMIUM", "/usr/bin/chromium")
# A turn crosses the gateway, Temporal, the worker and the model server: on two busy cores
# that can take more than Playwright's default 5 s to show.
expect.set_options(timeout=15_000)
SCREENSHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """A headless Chromium for one test module or test."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            yield browser
        finally:
            await browser.close()


async def screenshot(page: Page, name: str) -> Path:
    """Save the page as `artifacts/screenshots/<name>.png` and return the path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


class PageErrors:
    """Uncaught exceptions in a page's scripts: a test that saw one fails."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    def check(self) -> None:
        assert not self.errors, f"the page's scripts threw: {self.errors}"


@asynccontextmanager
async def serve_html(pages: dict[str, str]) -> AsyncIterator[str]:
    """A tiny HTTP server on a port of its own (so: an origin of its own) that answers GET
    `path` with `pages[path]` as HTML; yields its base URL (`http://127.0.0.1:PORT`)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            path = request.split(b" ", 2)[1].decode().split("?", 1)[0]
            body = pages.get(path)
            status = "200 OK" if body is not None else "404 Not Found"
            data = (body if body is not None else "not found").encode()
            writer.write(
                f"HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\n"
                f"content-length: {len(data)}\r\nconnection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


class ChatUI:
    """The chat (`/` or the widget's panel) as a visitor sees it. Playwright's CSS locators
    reach into open shadow roots."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors = PageErrors(page)
        self.status = page.locator(".parley .status")
        self.input = page.locator(".parley textarea.input")
        self.thread = page.locator(".parley .thread")
        self.questions = page.locator(".parley .thread .msg.in .bubble")
        self.replies = page.locator(".parley .thread .msg.out")
        self.cards = page.locator(".parley .card")
        self.alert = page.locator(".parley .alert")
        self.stop = page.locator(".parley button.stop")
        self.starters = page.locator(".parley .starter")
        self.announcer = page.locator(".parley [aria-live=polite]")

    def reply(self, text: str) -> Locator:
        """The replies that show `text`."""
        return self.replies.filter(has_text=text)

    async def online(self) -> None:
        await expect(self.status).to_have_attribute("data-state", "online")

    async def ask(self, text: str) -> None:
        await self.input.fill(text)
        await self.input.press("Enter")


RETURNS_POLICY = (
    "# Returns\n\nReturns are accepted within 17 days of delivery, unused and with a receipt."
)


async def register_shop_agent(
    pool: Any,
    *,
    origins: list[str] | None = None,
    auth_key: str | None = None,
    greeting: str | None = "Hi! I'm the Shop helper. Ask me about orders, returns and refunds.",
    starters: tuple[str, ...] = ("How do returns work?", "Where is my order?"),
    accent: str | None = None,
) -> str:
    """A registered agent in an organization of its own, with a widget profile and the
    returns policy in its knowledge (so its answers cite it); returns its id."""
    agent_id, org = str(uuid.uuid4()), f"org-{uuid.uuid4().hex[:8]}"
    async with pool.connection() as conn:
        await sessions.upsert_agent(
            conn,
            agent_id,
            name="Shop helper",
            org_id=org,
            allowed_origins=origins,
            auth_key=auth_key,
        )
        profile = agent_widget.WidgetProfile(greeting, list(starters), accent)
        await agent_widget.set_profile(conn, agent_id, profile)
        await documents.upsert_document(
            conn,
            org,
            Document(
                "returns.md",
                "Returns",
                "https://shop.example.com/returns",
                RETURNS_POLICY,
                Access(True),
            ),
        )
    return agent_id
