"""Rich interactions on the chat page, in a real Chromium against the real stack: a contact
form and choice chips, their validation errors next to the fields, a decline after a
reload, and what the model was told."""

from __future__ import annotations

import json
import uuid

import pytest
from playwright.async_api import Page, expect

from parley.stack.fake_anthropic import FakeAnthropic, Reply, ToolCall
from tests.browser import chromium, screenshot
from tests.helpers import GatewayServer

pytestmark = pytest.mark.usefixtures("worker")

ASK_CONTACT = ToolCall(
    "request_identity_intake",
    {
        "fields": ["name", "email", {"key": "phone", "required": False}],
        "reason": "to send you the quote",
    },
)
ASK_PLAN = ToolCall(
    "request_choices",
    {
        "questions": [
            {
                "question": "Which plan suits you?",
                "header": "Plan",
                "options": [{"label": "Basic"}, {"label": "Pro", "description": "For teams"}],
            },
            {
                "question": "Any add-ons?",
                "header": "Add-ons",
                "multiSelect": True,
                "options": [{"label": "Backup"}, {"label": "Support"}, {"label": "Audit"}],
            },
        ],
        "reason": "to tailor the quote",
    },
)
BAD_PHONE = "must be a valid phone number (include your country code, e.g. +1 555 123 4567)"


def told(fake_model: FakeAnthropic, request: int) -> dict:
    """The raise tool's result as the model read it in request `request`."""
    return json.loads(fake_model.requests[request].body["messages"][-1]["content"][0]["content"])


async def open_chat(page: Page, gateway: GatewayServer) -> None:
    await page.goto(f"{gateway.http_url}/?agent={uuid.uuid4()}")
    await expect(page.locator("#status")).to_have_attribute("data-state", "online")
    await page.fill("#input", "Can I get a quote?")
    await page.press("#input", "Enter")


async def test_a_form_and_chips_with_errors_next_to_the_fields(
    gateway: GatewayServer, fake_model: FakeAnthropic
) -> None:
    fake_model.enqueue(
        Reply(text="Sure, let me get your details.", tool_calls=[ASK_CONTACT]),
        Reply(text="Thanks! Now a couple of choices.", tool_calls=[ASK_PLAN]),
        Reply(text="Great: your quote is on its way."),
    )
    async with chromium() as browser:
        page = await browser.new_page()
        await open_chat(page, gateway)
        form = page.locator(".card.ask").first
        await expect(form).to_contain_text("to send you the quote")
        name, email, phone = (form.get_by_label(label) for label in ("Name", "Email", "Phone"))
        await email.fill("ada@")
        await phone.fill("555 1234")
        await form.get_by_role("button", name="Send").click()
        errors = form.locator(".field-error")
        await expect(errors.nth(0)).to_have_text("this field is required")  # the name
        await expect(errors.nth(1)).to_have_text("must be a valid email address")
        await expect(errors.nth(2)).to_have_text(BAD_PHONE)
        await expect(email).to_have_attribute("aria-invalid", "true")
        await screenshot(page, "interaction-form-errors")

        await name.fill("Ada Lovelace")
        await email.fill("ada@example.com")
        await phone.fill("+44 20 7946 0958")
        await form.get_by_role("button", name="Send").click()
        await expect(form.locator(".result")).to_have_text("Sent. Thank you!")

        chips = page.locator(".card.ask").nth(1)
        await expect(chips).to_contain_text("Which plan suits you?")
        await chips.get_by_role("button", name="Send").click()
        empty = "select an option or provide an 'other' answer"
        await expect(chips.locator(".field-error").nth(0)).to_have_text(empty)
        await chips.get_by_role("button", name="Basic").click()
        await chips.get_by_role("button", name="Pro").click()  # one answer: replaces Basic
        await chips.get_by_role("button", name="Backup").click()
        await chips.get_by_role("button", name="Audit").click()
        await expect(chips.get_by_role("button", name="Basic")).to_have_attribute(
            "aria-pressed", "false"
        )
        await screenshot(page, "interaction-chips-picked")
        await chips.get_by_role("button", name="Send").click()
        await expect(chips.locator(".result")).to_have_text("Sent. Thank you!")
        await expect(page.locator("#log")).to_contain_text("Great: your quote is on its way.")
        await screenshot(page, "interaction-answered")
    assert told(fake_model, 1) == {
        "status": "submitted",
        "values": {"name": "Ada Lovelace", "email": "ada@example.com", "phone": "+442079460958"},
    }
    assert told(fake_model, 2)["values"] == {
        "answers": [
            {"header": "Plan", "options": ["Pro"]},
            {"header": "Add-ons", "options": ["Backup", "Audit"]},
        ]
    }


async def test_the_question_survives_a_reload_and_can_be_declined(
    gateway: GatewayServer, fake_model: FakeAnthropic
) -> None:
    fake_model.enqueue(
        Reply(text="Let me ask.", tool_calls=[ASK_CONTACT]),
        Reply(text="No problem, we will go on without it."),
    )
    async with chromium() as browser:
        page = await browser.new_page()
        await open_chat(page, gateway)
        await expect(page.locator(".card.ask")).to_have_count(1)
        await page.reload()  # the turn is re-attached, and its question shown again
        form = page.locator(".card.ask")
        await expect(form).to_have_count(1)
        await form.get_by_role("button", name="No, thanks").click()
        await expect(form.locator(".result")).to_have_text("Declined.")
        await expect(page.locator("#log")).to_contain_text("we will go on without it")
        await page.reload()  # now from the history: the decision is in the reply's record
        await expect(page.locator("#log .card")).to_contain_text("to send you the quote")
        await expect(page.locator("#log .card")).to_contain_text("Declined.")
        await screenshot(page, "interaction-declined-after-reload")
    assert told(fake_model, 1)["status"] == "declined"
