"""The embeddable widget in a real Chromium, on a page served from another origin.

One script tag on a shop's page: a launcher and a chat panel that the page's (hostile) CSS
cannot restyle, a conversation with the gateway across origins for a site the agent's embed
policy allows (and nothing for one it does not), the signed-in customer passed through the
page's `ParleyWidget.authContext` hook, and all of it by keyboard. Screenshots of each state
go to artifacts/screenshots/.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from parley.stack.fake_anthropic import FakeAnthropic, Reply
from parley.widget_auth import sign_auth_context
from tests.browser import ChatUI, chromium, register_shop_agent, screenshot, serve_html
from tests.helpers import GatewayServer

pytestmark = pytest.mark.usefixtures("worker")

AUTH_KEY = "shop-widget-signing-key"
ACCENT = "#0a7d52"

# A shop's page, with CSS that would wreck any widget it reached.
HOST_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Acme shop</title>
<style>
  * {{ font-family: "Times New Roman", serif !important; color: #cc0000 !important; }}
  button {{ background: lime !important; border: 6px solid red !important; }}
  div, p {{ padding: 30px !important; margin: 20px !important; }}
  body {{ background: #f7f3ea; }}
</style>
</head>
<body>
<h1>Acme shop</h1>
<p>Spring sale: everything 20% off.</p>
<button id="buy" type="button">Buy now</button>
<script>{hook}</script>
<script src="{gateway}/widget.js" data-agent-id="{agent}" async></script>
</body>
</html>
"""


def host_page(gateway: GatewayServer, agent: str, auth: dict[str, Any] | None = None) -> str:
    """The page; with `auth`, it hands the widget that signed authContext (as a shop's
    backend would sign it for the signed-in customer)."""
    hook = f"window.ParleyWidget = {{ authContext: async () => ({json.dumps(auth)}) }};"
    return HOST_PAGE.format(hook=hook if auth else "", gateway=gateway.http_url, agent=agent)


def signed(user_id: str) -> dict[str, Any]:
    now = int(time.time())
    return {
        "userId": user_id,
        "signature": sign_auth_context(AUTH_KEY, user_id, now),
        "timestamp": now,
    }


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1100, "height": 800})
    try:
        yield await context.new_page()
    finally:
        await context.close()


class Widget(ChatUI):
    def __init__(self, page: Page) -> None:
        super().__init__(page)
        self.launcher = page.locator("[data-parley-widget] .launcher")
        self.panel = page.locator("[data-parley-widget] .panel")
        self.unread = page.locator("[data-parley-widget] .unread")


async def sessions_of(pool: Any, agent: str) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "select s.origin, p.external_id from sessions s"
            " join participants p on p.id = s.user_participant_id where s.agent_id = %s",
            (agent,),
        )
        return await cur.fetchall()


async def test_the_widget_on_an_allowed_site_knows_the_signed_in_customer(
    page: Page, gateway: GatewayServer, pool: Any, fake_model: FakeAnthropic
) -> None:
    pages: dict[str, str] = {}
    async with serve_html(pages) as site:
        agent = await register_shop_agent(pool, origins=[site], auth_key=AUTH_KEY, accent=ACCENT)
        pages["/"] = host_page(gateway, agent, signed("customer-42"))
        widget = Widget(page)
        await page.goto(site + "/")
        await expect(widget.launcher).to_be_visible()
        await expect(widget.launcher).to_have_attribute("aria-label", "Chat with Shop helper")
        await expect(widget.launcher).to_have_css("background-color", "rgb(10, 125, 82)")
        await expect(widget.launcher).to_have_css("border-top-width", "0px")  # not the page's
        await screenshot(page, "widget-closed")

        await widget.launcher.click()
        await expect(widget.panel).to_be_visible()
        await expect(widget.launcher).to_have_attribute("aria-expanded", "true")
        await widget.online()
        await expect(widget.input).to_be_focused()
        await expect(page.locator(".parley .welcome")).to_contain_text("I'm the Shop helper")
        await expect(widget.starters).to_have_count(2)
        # The page's CSS stays out of the panel.
        font = await widget.input.evaluate("e => getComputedStyle(e).fontFamily")
        assert "Times" not in font, font
        await expect(page.locator(".parley .name")).not_to_have_css("color", "rgb(204, 0, 0)")
        await screenshot(page, "widget-open")

        answer = "Returns are free within **17 days**:\n\n- print the label\n- drop the parcel off"
        fake_model.enqueue(Reply(text=answer, pause_after=6))
        await widget.starters.first.click()
        await expect(widget.replies).to_contain_text("Returns are free")
        # Closed while the reply streams: the launcher says a reply came.
        await widget.launcher.click()
        await expect(widget.panel).to_be_hidden()
        await expect(widget.launcher).to_be_focused()
        fake_model.release()
        await expect(widget.unread).to_be_visible()
        await screenshot(page, "widget-unread")
        await widget.launcher.click()
        await expect(widget.unread).to_be_hidden()
        reply = widget.reply("Returns are free")
        await expect(reply.locator("strong")).to_have_text("17 days")
        await expect(reply.locator(".md li")).to_have_text(
            ["print the label", "drop the parcel off"]
        )
        await expect(widget.stop).to_be_hidden()
        await screenshot(page, "widget-answered")
        await page.emulate_media(color_scheme="dark")
        await screenshot(page, "widget-answered-dark")
        await page.emulate_media(color_scheme="light")

        # The session was opened from the shop's origin, for the customer its backend signed.
        assert await sessions_of(pool, agent) == [{"origin": site, "external_id": "customer-42"}]

        # A reload keeps the panel open and the conversation.
        await page.reload()
        await expect(widget.panel).to_be_visible()
        await widget.online()
        await expect(widget.reply("Returns are free")).to_have_count(1)
        await page.set_viewport_size({"width": 390, "height": 760})
        await screenshot(page, "widget-mobile")
        await page.locator(".parley button.close").click()
        await expect(widget.panel).to_be_hidden()
        assert len(await sessions_of(pool, agent)) == 1  # the same session throughout
    widget.errors.check()


async def test_a_site_the_policy_does_not_allow_gets_no_chat(
    page: Page, gateway: GatewayServer, pool: Any
) -> None:
    pages: dict[str, str] = {}
    async with serve_html(pages) as site:
        agent = await register_shop_agent(pool, origins=["https://shop.example"])
        pages["/"] = host_page(gateway, agent)
        widget = Widget(page)
        async with page.expect_console_message(lambda m: "may not embed" in m.text):
            await page.goto(site + "/")
        await expect(widget.launcher).to_be_hidden()
        # Opened anyway (from the page's script): the gateway refuses the session.
        await page.evaluate("window.ParleyWidget.open()")
        await expect(widget.panel).to_be_visible()
        await expect(page.locator(".parley .unavailable")).to_have_text(
            "This chat isn't available on this site."
        )
        await expect(widget.status).to_have_attribute("data-state", "unavailable")
        await expect(widget.input).to_be_hidden()
        await screenshot(page, "widget-refused")
    assert await sessions_of(pool, agent) == []
    widget.errors.check()


async def test_the_widget_by_keyboard(
    page: Page, gateway: GatewayServer, pool: Any, fake_model: FakeAnthropic
) -> None:
    pages: dict[str, str] = {}
    async with serve_html(pages) as site:
        agent = await register_shop_agent(pool, origins=[site])
        pages["/"] = host_page(gateway, agent)
        widget = Widget(page)
        await page.goto(site + "/")
        await expect(widget.launcher).to_be_visible()
        await page.locator("#buy").focus()
        await page.keyboard.press("Tab")  # the launcher comes after the page's own controls
        await expect(widget.launcher).to_be_focused()
        await page.keyboard.press("Enter")
        await expect(widget.input).to_be_focused()
        await widget.online()
        fake_model.enqueue(Reply(text="We ship to 30 countries."))
        await page.keyboard.type("Do you ship abroad?")
        await page.keyboard.press("Enter")
        await expect(widget.reply("We ship to 30 countries.")).to_have_count(1)
        await expect(widget.stop).to_be_hidden()
        await page.keyboard.press("Escape")  # nothing to stop: Escape closes the panel
        await expect(widget.panel).to_be_hidden()
        await expect(widget.launcher).to_be_focused()
    widget.errors.check()
