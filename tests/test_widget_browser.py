"""The embeddable widget in a real Chromium, on a page served from another origin.

One script tag on a shop's page: a launcher and a chat panel that the page's (hostile) CSS
cannot restyle, a conversation with the gateway across origins for a site the agent's embed
policy allows (and nothing for one it does not), the signed-in customer passed through the
page's `ParleyWidget.authContext` hook, and all of it by keyboard. Screenshots of each state
go to artifacts/screenshots/.

Signed-in visitors by JWT (PARLEY_AUTH=jwt): the widget and the chat page at `/` take the
visitor's token from the `ParleyWidget.token` hook, the session they open belongs to that
user, and a gateway that keeps refusing the token gets a "sign in again" message after a few
tries, not an endless reconnect loop.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
from playwright.async_api import Browser, Page, expect
from pydantic import SecretStr

from parley.settings import Settings
from parley.stack.fake_anthropic import FakeAnthropic, Reply
from parley.widget_auth import sign_auth_context
from tests.browser import ChatUI, chromium, register_shop_agent, screenshot, serve_html
from tests.helpers import GatewayServer, WsClient, running_gateway

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
        console: list[str] = []
        page.on("console", lambda m: console.append(m.text))
        # The server's reason, read across origins: not a CORS error in the host's console.
        reason = "HTTP 403: this site may not embed this agent"
        async with page.expect_console_message(lambda m: reason in m.text):
            await page.goto(site + "/")
        assert not [m for m in console if "CORS" in m], console
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


async def test_a_rate_limited_profile_still_shows_the_chat(
    page: Page, settings: Settings, pool: Any, fake_model: FakeAnthropic
) -> None:
    limited = settings.model_copy(update={"http_requests_per_ip_per_minute": 1})
    pages: dict[str, str] = {}
    async with running_gateway(limited) as gateway, serve_html(pages) as site:
        agent = await register_shop_agent(pool, origins=[site])
        pages["/"] = host_page(gateway, agent)
        async with httpx.AsyncClient() as http:  # this address's one profile read a minute
            assert (await http.get(f"{gateway.http_url}/widget/agents/{agent}")).status_code == 200
        widget = Widget(page)
        async with page.expect_console_message(lambda m: "too many requests" in m.text):
            await page.goto(site + "/")
        await expect(widget.launcher).to_be_visible()  # not taken for a refused site
        await widget.launcher.click()
        await widget.online()
        fake_model.enqueue(Reply(text="Hello from the shop."))
        await widget.ask("Hi")
        await expect(widget.reply("Hello from the shop.")).to_have_count(1)
        await expect(widget.stop).to_be_hidden()
        await screenshot(page, "widget-profile-rate-limited")
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


SECRET = "widget-jwt-test-secret-of-a-decent-length"
MAX_REFUSALS = 3  # client.js: refused upgrades in a row before the chat stops trying

# A shop's page whose backend hands the widget the signed-in customer's token (JWT).
TOKEN_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Acme shop</title></head>
<body>
<h1>Acme shop</h1>
<p>Signed in.</p>
<script>
  window.tokenCalls = 0;
  window.currentToken = {token};
  window.ParleyWidget = {{
    token: async () => {{ window.tokenCalls += 1; return window.currentToken; }},
  }};
</script>
<script src="{gateway}/widget.js" data-agent-id="{agent}" async></script>
</body>
</html>
"""


def token(sub: str, org: str, seconds: int = 300) -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "org": org, "exp": now + seconds}, SECRET, algorithm="HS256")


def token_page(gateway: GatewayServer, agent: str, visitor_token: str) -> str:
    return TOKEN_PAGE.format(token=json.dumps(visitor_token), gateway=gateway.http_url, agent=agent)


def jwt_settings(settings: Settings, *, strict: bool = False) -> Settings:
    return settings.model_copy(
        update={"auth": "jwt", "jwt_secret": SecretStr(SECRET), "auth_strict": strict}
    )


async def org_of(pool: Any, agent: str) -> str:
    async with pool.connection() as conn:
        cur = await conn.execute("select org_id from agents where id = %s", (agent,))
        row = await cur.fetchone()
    assert row is not None
    return str(row["org_id"])


async def only_session(pool: Any, agent: str) -> dict[str, Any]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "select id, owner_org, owner_subject from sessions where agent_id = %s", (agent,)
        )
        rows = await cur.fetchall()
    assert len(rows) == 1, rows
    return {**rows[0], "id": str(rows[0]["id"])}


async def history_as(gateway: GatewayServer, session: str, who: str | None) -> dict[str, Any]:
    """`get_conversation_messages` on a socket of its own, with `who`'s token (None:
    anonymous)."""
    url = gateway.ws_url + (f"?token={who}" if who else "")
    async with await WsClient.open(url) as client:
        frame = {"action": "get_conversation_messages", "sessionId": session}
        return await client.request(frame)


async def test_the_widget_opens_the_signed_in_users_session(
    page: Page, settings: Settings, pool: Any, fake_model: FakeAnthropic
) -> None:
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    pages: dict[str, str] = {}
    async with running_gateway(jwt_settings(settings)) as gateway, serve_html(pages) as site:
        agent = await register_shop_agent(pool, origins=[site])
        org = await org_of(pool, agent)
        alice = token("alice", org)
        pages["/"] = token_page(gateway, agent, alice)
        widget = Widget(page)
        await page.goto(site + "/")
        await widget.launcher.click()
        await widget.online()
        fake_model.enqueue(Reply(text="Your order ships **tomorrow**.", pause_after=3))
        await widget.ask("When does my order ship?")
        await expect(widget.replies).to_contain_text("Your order s")  # the first chunks
        fake_model.release()
        await expect(widget.reply("Your order ships tomorrow.").locator("strong")).to_have_text(
            "tomorrow"
        )
        await expect(widget.stop).to_be_hidden()
        await screenshot(page, "widget-jwt-signed-in")

        # The session is Alice's: her token reads it from anywhere, nobody else's does.
        session = await only_session(pool, agent)
        assert (session["owner_org"], session["owner_subject"]) == (org, "alice")
        mine = await history_as(gateway, session["id"], token("alice", org))
        assert mine["status"] == 200
        texts = [m["content"]["text"] for m in mine["data"]["messages"]]
        assert "When does my order ship?" in texts
        for stranger in (None, token("bob", org)):
            theirs = await history_as(gateway, session["id"], stranger)
            assert theirs["type"] == "error", theirs
            assert theirs["error"]["code"] == "SESSION_NOT_FOUND"

        # The token went on the socket's URL only: not in the page's address, its history
        # or anything the scripts logged.
        assert alice not in page.url
        assert alice not in await page.evaluate("location.href + JSON.stringify(history.state)")
        assert not [line for line in console if alice in line]
        assert await page.evaluate("window.tokenCalls") >= 1
    widget.errors.check()


async def test_a_refused_token_asks_the_visitor_to_sign_in_again(
    page: Page, settings: Settings, pool: Any, fake_model: FakeAnthropic
) -> None:
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    pages: dict[str, str] = {}
    strict = jwt_settings(settings, strict=True)
    async with running_gateway(strict) as gateway, serve_html(pages) as site:
        agent = await register_shop_agent(pool, origins=[site])
        pages["/"] = token_page(gateway, agent, "not-a-valid-token")
        widget = Widget(page)
        await page.clock.install()  # time runs as usual until the test moves it on
        await page.goto(site + "/")
        await widget.launcher.click()
        await expect(widget.alert).to_contain_text("You need to sign in again to chat.")
        await expect(widget.status).to_have_attribute("data-state", "refused")
        await expect(widget.page.locator(".parley .banner")).to_be_hidden()
        await screenshot(page, "widget-jwt-refused")
        # A few tries, the hook asked before each, and then no more, however long it waits.
        assert await page.evaluate("window.tokenCalls") == MAX_REFUSALS
        await page.clock.run_for(10 * 60 * 1000)
        assert await page.evaluate("window.tokenCalls") == MAX_REFUSALS
        assert len(sockets) == MAX_REFUSALS

        # Signed in again: Retry asks the hook for the new token, and the chat works.
        org = await org_of(pool, agent)
        await page.evaluate(f"window.currentToken = {json.dumps(token('alice', org))}")
        await widget.page.locator(".parley .alert-retry").click()
        await widget.online()
        await expect(widget.alert).to_be_hidden()
        fake_model.enqueue(Reply(text="Welcome back."))
        await widget.ask("Hello again")
        await expect(widget.reply("Welcome back.")).to_have_count(1)
        assert (await only_session(pool, agent))["owner_subject"] == "alice"
    widget.errors.check()


async def test_the_chat_page_takes_the_token_hook_too(
    page: Page, settings: Settings, pool: Any, fake_model: FakeAnthropic
) -> None:
    async with running_gateway(jwt_settings(settings, strict=True)) as gateway:
        agent = await register_shop_agent(pool)
        alice = token("alice", await org_of(pool, agent))
        await page.context.add_init_script(
            f"window.ParleyWidget = {{token: () => Promise.resolve({json.dumps(alice)})}}"
        )
        chat = ChatUI(page)
        await page.goto(f"{gateway.http_url}/?agent={agent}")
        await chat.online()
        fake_model.enqueue(Reply(text="Hi Alice."))
        await chat.ask("Hi")
        await expect(chat.reply("Hi Alice.")).to_have_count(1)
        assert (await only_session(pool, agent))["owner_subject"] == "alice"
        assert alice not in page.url
    chat.errors.check()
