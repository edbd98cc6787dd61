"""The approvals desk page at `/desk` in a real Chromium: a team member signs in, sees the
visitor's pending refund with the conversation, fixes an invalid edit, approves with a
note; the visitor's chat page (another browser context) shows the rest of the turn."""

from __future__ import annotations

import pytest
from playwright.async_api import Page, expect

from parley.settings import Settings
from parley.stack.fake_anthropic import FakeAnthropic, Reply, ToolCall
from tests.browser import ChatUI, PageErrors, chromium, screenshot
from tests.helpers import GatewayServer, WsClient, is_terminal
from tests.test_desk import (
    LONG_MESSAGE,
    LONG_URL,
    LONG_WORD,
    REFUND,
    ask,
    decline_all,
    desk,
    desk_token,
    park_message,
)
from tests.test_desk import desk_gateway as desk_gateway

pytestmark = pytest.mark.usefixtures("worker")

MESSAGE = "My blender arrived broken, please refund 120 EUR on ORD-4242."


class Watched:
    """What a page's policy refused (Chromium logs each refusal) and what its scripts threw."""

    def __init__(self, page: Page) -> None:
        self.errors = PageErrors(page)
        self.policy_violations: list[str] = []
        page.on(
            "console",
            lambda m: (
                self.policy_violations.append(m.text)
                if "Content Security Policy" in m.text
                else None
            ),
        )


async def open_desk(page: Page, gateway: GatewayServer) -> Watched:
    """Open `/desk`, checking it is served under the strict page policy."""
    watched = Watched(page)
    response = await page.goto(gateway.http_url + "/desk")
    assert response is not None
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    return watched


async def test_list_edit_and_approve_at_the_desk_while_the_visitor_watches(
    desk_gateway: GatewayServer,
    settings: Settings,
    fake_model: FakeAnthropic,
    pool,
) -> None:
    fake_model.enqueue(
        Reply(tool_calls=[ToolCall("team_refund", {"order_id": "ORD-4242", "amount": 120})]),
        Reply(text="A team member approved a refund of 80 EUR; it is on its way."),
    )
    # The chat page connects anonymously: its session is in the deployment's organization.
    token = desk_token(settings.org, sub="sam")
    async with chromium() as browser:
        # The desk is open before anything waits: the approval appears without a reload.
        agent = await (await browser.new_context()).new_page()
        refused = await open_desk(agent, desk_gateway)
        await agent.fill("#token", desk_token(settings.org, sub="nobody", role=None))
        await agent.click("#signin-button")
        await expect(agent.locator("#status")).to_have_attribute("data-state", "error")
        await expect(agent.locator("#status")).to_contain_text("no role")
        await agent.fill("#token", token)
        await agent.click("#signin-button")
        await expect(agent.locator("#status")).to_have_attribute("data-state", "online")
        await expect(agent.locator(".empty")).to_have_text("Nothing waits for you.")
        listings: list[str] = []
        agent.on(
            "request",
            lambda r: listings.append(r.url) if "/api/approvals?" in r.url else None,
        )

        visitor = await (await browser.new_context()).new_page()
        chat = ChatUI(visitor)
        await visitor.goto(desk_gateway.http_url + "/")
        await chat.online()
        await chat.ask(MESSAGE)
        waiting = chat.cards.first
        await expect(waiting.locator(".card-text")).to_have_text("Refund 120 EUR on order ORD-4242")
        await expect(waiting.locator(".card-title")).to_have_text("Waiting for approval")
        await expect(waiting.get_by_role("button", name="Approve")).to_have_count(0)
        await screenshot(visitor, "desk-visitor-waiting")

        # The approval was recorded before the visitor saw it: the desk's waiting long poll,
        # woken by PostgreSQL NOTIFY, shows it within about a second, not at a poll's tick.
        card = agent.locator("article.approval", has_text="ORD-4242")
        await expect(card).to_contain_text("Refund 120 EUR on order ORD-4242", timeout=1500)
        assert listings and all("wait=25&since=" in url for url in listings), listings
        assert len(listings) <= 3  # one waiting request per change, not one every 2 s
        await expect(card.locator(".excerpt")).to_contain_text(MESSAGE)
        amount = card.locator("input[data-arg=amount]")
        await expect(amount).to_have_value("120")
        await screenshot(agent, "desk-listed")

        await amount.fill("9000")  # over the tool's maximum: refused, nothing decided
        await card.get_by_role("button", name="Approve").click()
        error = card.locator(f"#{await amount.get_attribute('aria-describedby')}")
        await expect(error).to_contain_text("9000")
        await screenshot(agent, "desk-invalid-edit")
        async with pool.connection() as conn:
            cur = await conn.execute(
                "select decision from approvals where tool_name = 'team_refund'"
                " and arguments->>'order_id' = 'ORD-4242'"
            )
            assert (await cur.fetchone())["decision"] is None

        await amount.fill("80")
        await card.locator("textarea").fill("One item only; the other was fine.")
        await card.get_by_role("button", name="Approve").click()
        await expect(card.locator(".outcome")).to_have_text("Approved with your changes.")
        await screenshot(agent, "desk-approved")

        # The visitor's open chat goes on: the tool ran with the approved amount.
        await expect(chat.reply("approved a refund of 80 EUR")).to_have_count(1)
        await expect(chat.cards.first.locator(".card-title")).to_have_text("Done")
        await expect(chat.cards.first).to_contain_text("A team member approved this")
        # What ran, not what was asked: the approver changed the amount.
        await expect(chat.cards.first.locator(".card-text")).to_have_text(
            "Refund 80 EUR on order ORD-4242"
        )
        await screenshot(visitor, "desk-visitor-done")
        await expect(agent.locator("#decided")).to_contain_text(
            'Approved with your changes. team_refund (amount=80, order_id="ORD-4242")'
        )
        await expect(agent.locator(".empty")).to_have_text("Nothing waits for you.")
        assert refused.policy_violations == []
        refused.errors.check()

        # After a reload the card still says who approved it, and what ran.
        await visitor.reload()
        await chat.online()
        done = chat.cards.first
        await expect(done.locator(".card-title")).to_have_text("Done")
        await expect(done.locator(".card-result")).to_have_text(
            "A team member approved this, and it's done."
        )
        await expect(done.locator(".card-text")).to_have_text("Refund 80 EUR on order ORD-4242")
        await screenshot(visitor, "desk-visitor-reloaded")

    async with pool.connection() as conn:
        cur = await conn.execute(
            "select a.approved_arguments, a.note, e.arguments from approvals a"
            " join tool_executions e on e.workflow_id = a.turn_id"
            " and e.tool_call_id = a.tool_call_id"
            " where a.arguments->>'order_id' = 'ORD-4242'"
        )
        row = await cur.fetchone()
    assert row["approved_arguments"] == row["arguments"] == {"order_id": "ORD-4242", "amount": 80}
    assert row["note"] == "One item only; the other was fine."


async def test_your_own_request_is_shown_but_not_yours_to_decide(
    desk_gateway: GatewayServer, fake_model: FakeAnthropic, settings: Settings
) -> None:
    """Four eyes on the page: sam's own refund is listed with its buttons disabled and a
    short reason; a colleague's page offers them."""
    fake_model.enqueue(Reply(tool_calls=[REFUND]), Reply(text="Approved by a colleague."))
    own = desk_token(settings.org, sub="sam")
    async with await WsClient.open(desk_gateway.ws_url + f"?token={own}") as client:
        session = await client.create_session("agent-desk-own")
        await ask(client, session["sessionId"], "o1", "refund my own order ORD-77")
        async with chromium() as browser:
            for sub, mine in (("sam", True), ("kim", False)):
                page = await (await browser.new_context()).new_page()
                watched = await open_desk(page, desk_gateway)
                await page.fill("#token", desk_token(settings.org, sub=sub))
                await page.click("#signin-button")
                card = page.locator("article.approval", has_text="ORD-77")
                await expect(card).to_contain_text("Refund 120 EUR on order ORD-77")
                for name in ("Approve", "Decline", "+15 min"):
                    button = expect(card.get_by_role("button", name=name))
                    await (button.to_be_disabled() if mine else button.to_be_enabled())
                reason = card.locator(".own")
                if mine:
                    await expect(reason).to_have_text(
                        "This is your own request: a colleague must decide or extend it."
                    )
                    await screenshot(page, "desk-own-request")
                else:
                    await expect(reason).to_have_count(0)
                    await card.get_by_role("button", name="Approve").click()
                    await expect(card.locator(".outcome")).to_have_text("Approved.")
                assert watched.policy_violations == []
                watched.errors.check()
        events = await client.recv_until(is_terminal("o1"))
        assert events[-1]["type"] == "eventual_response"


async def test_long_content_wraps_and_the_excerpt_is_shortened_on_a_phone(
    desk_gateway: GatewayServer, fake_model: FakeAnthropic
) -> None:
    """QA's long content at 375 px, light and dark: a 7,500-character message (a long URL, a
    long word), a long requester name, organization and order id. Nothing scrolls sideways,
    the card stays short and says its message was shortened."""
    org = "org-" + "o" * 120
    order = "ORD-" + "7" * 120
    name = "Maximiliane-" + "N" * 150
    call = ToolCall("team_refund", {"order_id": order, "amount": 120})
    parked = [await park_message(desk_gateway, org, fake_model, LONG_MESSAGE, name=name, call=call)]
    try:
        async with chromium() as browser:
            for scheme, width, height in (
                ("light", 375, 700),
                ("dark", 375, 700),
                ("light", 1280, 800),
            ):
                context = await browser.new_context(
                    viewport={"width": width, "height": height}, color_scheme=scheme
                )
                page = await context.new_page()
                watched = await open_desk(page, desk_gateway)
                await page.fill("#token", desk_token(org, sub="kim"))
                await page.click("#signin-button")
                card = page.locator("article.approval", has_text=order)
                await expect(card.locator(".meta")).to_contain_text(name)
                excerpt = card.locator(".excerpt")
                await expect(excerpt).to_contain_text(LONG_WORD)
                await expect(excerpt).to_contain_text(LONG_URL[:250])
                await expect(excerpt.locator(".cut")).to_have_text(
                    "(shortened from 7,500 characters)"
                )
                await expect(page.locator("#status")).to_contain_text(org)
                scroll = await page.evaluate(
                    "[document.documentElement.scrollWidth, document.body.scrollWidth]"
                )
                assert max(scroll) <= width, (scheme, width, scroll)
                box = await card.bounding_box()
                assert box is not None and box["width"] <= width and box["height"] < 1500, box
                dark = await page.evaluate("matchMedia('(prefers-color-scheme: dark)').matches")
                assert dark is (scheme == "dark")
                await screenshot(page, f"desk-long-content-{scheme}-{width}")
                assert watched.policy_violations == []
                watched.errors.check()
                await context.close()
    finally:  # a parked turn would hold up the gateway's shutdown
        async with desk(desk_gateway.http_url, desk_token(org, sub="kim")) as http:
            await decline_all(http, fake_model, parked)
