"""The chat page at `/` in a real Chromium, against the real stack and the test model."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from parley.stack.fake_anthropic import FakeAnthropic, Reply
from tests.browser import chromium, screenshot
from tests.helpers import GatewayServer

pytestmark = pytest.mark.usefixtures("worker")


async def test_a_visitor_asks_and_the_answer_streams_in(
    gateway: GatewayServer, fake_model: FakeAnthropic
) -> None:
    fake_model.enqueue(Reply(text="Returns are accepted within 17 days."))
    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(gateway.http_url + "/")
        await expect(page.locator(".status")).to_have_attribute("data-state", "online")
        await page.fill("textarea", "How long do I have to return an item?")
        await page.press("textarea", "Enter")
        log = page.locator(".log")
        await expect(log).to_contain_text("How long do I have to return an item?")
        await expect(log).to_contain_text("Returns are accepted within 17 days.")
        await screenshot(page, "chat-answered")
