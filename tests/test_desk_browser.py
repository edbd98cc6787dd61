"""The approvals desk page at `/desk` in a real Chromium: a team member signs in, sees the
visitor's pending refund with the conversation, fixes an invalid edit, approves with a
note; the visitor's chat page (another browser context) shows the rest of the turn."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from parley.settings import Settings
from parley.stack.fake_anthropic import FakeAnthropic, Reply, ToolCall
from tests.browser import ChatUI, chromium, screenshot
from tests.helpers import GatewayServer
from tests.test_desk import desk_gateway as desk_gateway
from tests.test_desk import desk_token

pytestmark = pytest.mark.usefixtures("worker")

MESSAGE = "My blender arrived broken, please refund 120 EUR on ORD-4242."


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
        await agent.goto(desk_gateway.http_url + "/desk")
        await agent.fill("#token", desk_token(settings.org, sub="nobody", role=None))
        await agent.click("#signin-button")
        await expect(agent.locator("#status")).to_have_attribute("data-state", "error")
        await expect(agent.locator("#status")).to_contain_text("no role")
        await agent.fill("#token", token)
        await agent.click("#signin-button")
        await expect(agent.locator("#status")).to_have_attribute("data-state", "online")
        await expect(agent.locator(".empty")).to_have_text("Nothing waits for you.")

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

        card = agent.locator("article.approval", has_text="ORD-4242")
        await expect(card).to_contain_text("Refund 120 EUR on order ORD-4242")
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
