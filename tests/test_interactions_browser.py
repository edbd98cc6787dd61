"""Rich interactions in the chat, in a real Chromium against the real stack: the identity
form with the gateway's errors next to their fields, choice chips with one or several answers
and an "Other" answer, "No thanks", a question waiting across a reload, the final state each
card ends in (live and from the history), and what the model was told. Screenshots go to
artifacts/screenshots/.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, expect

from parley.stack.fake_anthropic import FakeAnthropic, Reply, ToolCall
from tests.browser import ChatUI, chromium, register_shop_agent, screenshot
from tests.helpers import GatewayServer

pytestmark = pytest.mark.usefixtures("worker")

ASK_CONTACT = ToolCall(
    "request_identity_intake",
    {
        "fields": ["name", "email", {"key": "phone", "required": False}],
        "reason": "To send you the quote.",
    },
)
PLAN = {
    "question": "Which plan would you like?",
    "header": "Plan",
    "options": [{"label": "Basic"}, {"label": "Pro", "description": "For teams"}],
}
ADDONS = {
    "question": "Any add-ons?",
    "header": "Add-ons",
    "options": [{"label": "Backup"}, {"label": "Support"}],
    "multiSelect": True,
}
ASK_PLAN = ToolCall("request_choices", {"questions": [PLAN, ADDONS], "reason": "To price it."})


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    context = await browser.new_context(viewport={"width": 760, "height": 900})
    try:
        yield context
    finally:
        await context.close()


@pytest.fixture
async def chat(context: BrowserContext, gateway: GatewayServer, pool: Any) -> AsyncIterator[ChatUI]:
    agent = await register_shop_agent(pool)
    page = await context.new_page()
    chat = ChatUI(page)
    await page.goto(f"{gateway.http_url}/?agent={agent}")
    await chat.online()
    yield chat
    chat.errors.check()


def last_tool_result(fake_model: FakeAnthropic) -> Any:
    """What the model was told the visitor answered (the raise tool's result)."""
    messages = fake_model.requests[-1].body["messages"]
    block = next(
        b
        for m in reversed(messages)
        if isinstance(m["content"], list)
        for b in m["content"]
        if b.get("type") == "tool_result"
    )
    content = block["content"]
    text = content if isinstance(content, str) else "".join(c.get("text", "") for c in content)
    return json.loads(text)


async def test_the_identity_form_shows_the_gateways_errors_then_ends_shared(
    chat: ChatUI, fake_model: FakeAnthropic
) -> None:
    fake_model.enqueue(
        Reply(text="I can send you a quote.", tool_calls=[ASK_CONTACT]),
        Reply(text="Thanks! The quote is on its way."),
    )
    page = chat.page
    await chat.ask("Can I get a quote?")
    card = chat.cards.first
    await expect(card.locator(".card-title")).to_have_text("Share your contact details?")
    await expect(card.locator(".card-text")).to_have_text("To send you the quote.")
    name, email = card.get_by_label("Name"), card.get_by_label("Email")
    phone = card.get_by_label("Phone number")
    await expect(card.locator("label")).to_have_text(["Name", "Email", "Phone number (optional)"])
    await expect(chat.announcer).to_contain_text("asks for your contact details")
    await screenshot(page, "cards-identity")

    await email.fill("ada@")
    await phone.fill("555 1234")
    await card.get_by_role("button", name="Share").click()
    errors = card.locator(".field-error")
    await expect(errors).to_have_text(
        [
            "This field is required.",
            "Must be a valid email address.",
            "Must be a valid phone number (include your country code, e.g. +1 555 123 4567).",
        ]
    )
    await expect(email).to_have_attribute("aria-invalid", "true")
    await expect(name).to_be_focused()  # the first field to fix
    await screenshot(page, "cards-identity-invalid")

    await name.fill("Ada Lovelace")
    await expect(errors.nth(0)).to_be_hidden()  # fixed: its error goes at once
    await email.fill("ada@example.com")
    await phone.fill("+44 20 7946 0958")
    await card.get_by_role("button", name="Share").click()
    await expect(card.locator(".card-title")).to_have_text("Details shared")
    await expect(card.locator(".card-result")).to_have_text(
        "You shared your name, email and phone number."
    )
    await expect(card.locator("input")).to_have_count(0)
    await expect(chat.reply("Thanks! The quote is on its way.")).to_have_count(1)
    await expect(chat.input).to_be_focused()
    assert last_tool_result(fake_model) == {
        "status": "submitted",
        "values": {"name": "Ada Lovelace", "email": "ada@example.com", "phone": "+442079460958"},
    }
    await screenshot(page, "cards-identity-shared")

    await page.reload()
    await chat.online()
    await expect(chat.cards.locator(".card-title")).to_have_text(["Details shared"])
    await expect(chat.reply("The quote is on its way")).to_have_count(1)


async def test_choice_chips_take_one_several_and_other_answers(
    chat: ChatUI, fake_model: FakeAnthropic
) -> None:
    fake_model.enqueue(Reply(tool_calls=[ASK_PLAN]), Reply(text="Pro with extras it is."))
    page = chat.page
    await chat.ask("What would it cost?")
    card = chat.cards.first
    await expect(card.locator("legend .q-text")).to_have_text(
        ["Which plan would you like?", "Any add-ons?"]
    )
    await card.get_by_role("button", name="Send answer").click()  # nothing picked yet
    await expect(card.locator(".field-error:not([hidden])")).to_have_text(
        ["This question must be answered.", "This question must be answered."]
    )
    await card.locator(".chip", has_text="Basic").click()
    await card.locator(".chip", has_text="Pro").click()  # one answer: Pro replaces Basic
    plan, addons = card.locator("fieldset").nth(0), card.locator("fieldset").nth(1)
    await expect(plan.locator("input:checked")).to_have_count(1)
    await expect(plan.locator(".field-error")).to_be_hidden()  # answered: its error goes
    await addons.locator(".chip", has_text="Backup").click()
    await addons.locator(".chip", has_text="Other").click()
    await page.keyboard.type("Priority support")  # Other puts the cursor in its box
    await expect(addons.locator("input:checked")).to_have_count(2)
    await screenshot(page, "cards-choices")
    await page.emulate_media(color_scheme="dark")
    await screenshot(page, "cards-choices-dark")
    await page.emulate_media(color_scheme="light")

    await card.get_by_role("button", name="Send answer").click()
    await expect(card.locator(".card-title")).to_have_text("Answered")
    await expect(card.locator(".card-result")).to_have_text(
        "Plan: Pro · Add-ons: Backup, Priority support"
    )
    await expect(chat.reply("Pro with extras it is.")).to_have_count(1)
    answers = last_tool_result(fake_model)["values"]["answers"]
    assert {a["header"]: a for a in answers} == {
        "Plan": {"header": "Plan", "options": ["Pro"]},
        "Add-ons": {"header": "Add-ons", "options": ["Backup"], "other": "Priority support"},
    }


async def test_a_question_waiting_across_a_reload_can_be_declined(
    chat: ChatUI, fake_model: FakeAnthropic
) -> None:
    fake_model.enqueue(
        Reply(text="Let me ask.", tool_calls=[ASK_CONTACT]),
        Reply(text="No problem, we will go on without it."),
    )
    await chat.ask("Can I get a quote?")
    await expect(chat.cards.get_by_role("button", name="Share")).to_be_visible()
    await chat.page.reload()  # the turn is re-attached, and its question shown again
    await chat.online()
    await expect(chat.cards).to_have_count(1)
    card = chat.cards.first
    await card.get_by_role("button", name="No thanks").click()
    await expect(card.locator(".card-title")).to_have_text("You declined")
    await expect(card).to_have_attribute("data-state", "neutral")
    await expect(chat.reply("we will go on without it")).to_have_count(1)
    assert last_tool_result(fake_model)["status"] == "declined"
    await chat.page.reload()  # now from the history: the decision is in the reply's record
    await chat.online()
    await expect(chat.cards.locator(".card-title")).to_have_text(["You declined"])
    await expect(chat.cards.locator(".card-text")).to_have_text(["To send you the quote."])
    await screenshot(chat.page, "cards-declined-after-reload")


async def test_chips_waiting_across_a_reload_are_shown_once_and_answered(
    chat: ChatUI, fake_model: FakeAnthropic
) -> None:
    fake_model.enqueue(Reply(tool_calls=[ASK_PLAN]), Reply(text="Basic it is."))
    await chat.ask("What would it cost?")
    await expect(chat.cards.get_by_role("button", name="Send answer")).to_be_visible()
    await chat.page.reload()
    await chat.online()
    await expect(chat.cards).to_have_count(1)
    card = chat.cards.first
    await card.locator(".chip", has_text="Basic").click()
    await card.locator("fieldset").nth(1).locator(".chip", has_text="Support").click()
    await card.get_by_role("button", name="Send answer").click()
    await expect(card.locator(".card-title")).to_have_text("Answered")
    await expect(chat.reply("Basic it is.")).to_have_count(1)
    await expect(chat.cards).to_have_count(1)
