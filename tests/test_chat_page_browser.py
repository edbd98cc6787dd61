"""The chat page at `/` in a real Chromium, against the real stack and the test model server.

What a customer sees and does: a greeting and starter questions, a reply streaming in as
Markdown with its sources, tools under their labels, approval cards that end in a clear
state, Stop, an error and its Retry, a message refused and kept, and every way a page can
lose its socket (a reload mid-reply or at its very last token, a reload with a card waiting,
a dropped network, a half-open connection): the answer is always shown, exactly once.
Screenshots of each state go to artifacts/screenshots/.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, WebSocketRoute, expect

from parley.stack.fake_anthropic import FakeAnthropic, Reply, ToolCall
from tests.browser import ChatUI, chromium, register_shop_agent, screenshot
from tests.helpers import GatewayServer, WsClient, is_terminal
from tests.tcp_proxy import tcp_proxy

pytestmark = pytest.mark.usefixtures("worker")

REFUND = ToolCall("issue_refund", {"order_id": "ORD-1234", "reason": "damaged"})
LOOKUP = ToolCall("order_status", {"order_id": "ORD-1234"})


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


class Chats:
    """Opens chat pages in one browser context (one visitor: pages share localStorage) and
    fails the test if any page's script threw."""

    def __init__(self, context: BrowserContext, base: str) -> None:
        self.context = context
        self.base = base
        self.opened: list[ChatUI] = []

    async def open(self, query: str = "", base: str | None = None) -> ChatUI:
        page = await self.context.new_page()
        chat = ChatUI(page)
        self.opened.append(chat)
        await page.goto(f"{base or self.base}/{query}")
        await chat.online()
        return chat


@pytest.fixture
async def chats(browser: Browser, gateway: GatewayServer) -> AsyncIterator[Chats]:
    context = await browser.new_context(viewport={"width": 880, "height": 820})
    opened = Chats(context, gateway.http_url)
    try:
        yield opened
    finally:
        await context.close()
    for chat in opened.opened:
        chat.errors.check()


@pytest.fixture
async def agent(pool: Any) -> str:
    return await register_shop_agent(pool)


def chunks(text: str, size: int = 4) -> int:
    """How many text deltas the fake model streams `text` in."""
    return math.ceil(len(text) / size)


async def session_of(page: Page, agent: str) -> str:
    session = await page.evaluate(f"localStorage.getItem('parley:{agent}:sessionId')")
    assert session, "the page has no session"
    return session


async def turn_finished(gateway: GatewayServer, session_id: str, request_id: str) -> None:
    """Wait, as another client of the same session, until the turn has ended."""
    async with await WsClient.open(gateway.ws_url) as client:
        await client.send(
            {"action": "resume_turn", "requestId": request_id, "sessionId": session_id}
        )
        events = await client.recv_until(is_terminal(request_id))
    assert events[-1]["type"] == "eventual_response", events[-1]


REPLY = (
    "Returns are accepted within **17 days** of delivery.\n\n"
    "To start one:\n\n1. Open *Orders*\n2. Choose `Return` next to the item\n\n"
    "```text\nRMA-ORD-1234\n```\n\n"
    'Read [the policy](https://shop.example.com/returns). <img src=x onerror="window.__xss=1">'
)


async def test_a_first_visit_greets_then_a_reply_streams_in_as_markdown_with_sources(
    chats: Chats, agent: str, fake_model: FakeAnthropic
) -> None:
    chat = await chats.open(f"?agent={agent}")
    page = chat.page
    await expect(page.locator(".parley .welcome")).to_contain_text("I'm the Shop helper")
    await expect(chat.starters).to_have_text(["How do returns work?", "Where is my order?"])
    await expect(page.locator(".parley .name")).to_have_text("Shop helper")
    await expect(page).to_have_title("Shop helper")
    await screenshot(page, "page-welcome")

    fake_model.enqueue(Reply(text=REPLY, pause_after=12))  # "...**17 days** of deli"
    await chat.starters.first.click()
    await expect(chat.questions).to_have_text(["How do returns work?"])
    # Mid-stream, the Markdown so far is already rendered, and the reply can be stopped.
    await expect(chat.replies.locator("strong")).to_have_text("17 days")
    await expect(chat.stop).to_be_visible()
    await expect(chat.starters).to_have_count(2)
    await expect(chat.starters.first).to_be_hidden()
    await screenshot(page, "page-streaming")

    fake_model.release()
    reply = chat.reply("Returns are accepted")
    await expect(reply.locator(".md ol > li")).to_have_text(
        ["Open Orders", "Choose Return next to the item"]
    )
    await expect(reply.locator(".md li em")).to_have_text("Orders")
    await expect(reply.locator(".md li code")).to_have_text("Return")
    await expect(reply.locator(".code pre")).to_have_text("RMA-ORD-1234")
    await expect(reply.locator(".code button")).to_have_text("Copy")
    link = reply.get_by_role("link", name="the policy")
    await expect(link).to_have_attribute("href", "https://shop.example.com/returns")
    await expect(link).to_have_attribute("target", "_blank")
    await expect(link).to_have_attribute("rel", "noopener noreferrer")
    # Markup in a reply is text: shown, never run.
    await expect(reply).to_contain_text('<img src=x onerror="window.__xss=1">')
    assert await reply.locator("img").count() == 0
    assert await page.evaluate("window.__xss") is None
    # The sources, numbered; a click shows what was used.
    source = reply.locator(".sources .source")
    await expect(source.locator(".source-number")).to_have_text(["1"])
    await expect(source.locator(".source-title")).to_have_text(["Returns"])
    await expect(source.locator(".snippet")).to_be_hidden()
    await source.locator("summary").click()
    await expect(source.locator(".snippet")).to_contain_text("17 days")
    await expect(source.locator("a")).to_have_attribute("href", "https://shop.example.com/returns")
    await expect(chat.stop).to_be_hidden()
    await expect(chat.announcer).to_contain_text("Shop helper replied: Returns are accepted")
    await screenshot(page, "page-answered")
    await page.emulate_media(color_scheme="dark")
    await screenshot(page, "page-answered-dark")


async def test_an_approved_refund_ends_done_and_customers_see_labels_not_internals(
    chats: Chats, agent: str, fake_model: FakeAnthropic
) -> None:
    fake_model.enqueue(
        Reply(text="Let me look that order up.", tool_calls=[LOOKUP]),
        Reply(text="It arrived damaged, so I can refund it.", tool_calls=[REFUND]),
        Reply(text="Your refund is on its way."),
    )
    chat = await chats.open(f"?agent={agent}")
    page = chat.page
    await chat.ask("ORD-1234 arrived broken, can I get a refund?")
    card = chat.cards.first
    await expect(card.locator(".card-title")).to_have_text("Approval needed")
    await expect(card.locator(".card-caption")).to_have_text("Refund")  # its label
    await expect(card.locator(".card-text")).to_have_text(
        "Issue a refund for order ORD-1234 (damaged)"
    )
    await expect(chat.replies.locator(".step")).to_have_text(["Order lookup"])
    await expect(chat.announcer).to_contain_text("Approval needed: Issue a refund")
    # What customers never see: tool names, arguments as JSON.
    shown = await chat.thread.inner_text()
    assert "order_status" not in shown and "issue_refund" not in shown and "{" not in shown
    # A card waiting for the visitor is not inside a region marked busy.
    assert await card.evaluate("c => c.closest('[aria-busy=\"true\"]') === null")
    await screenshot(page, "page-approval")

    await card.get_by_role("button", name="Approve").click()
    await expect(card.locator(".card-title")).to_have_text("Done")
    await expect(card.locator(".card-result")).to_have_text("You approved this, and it's done.")
    await expect(card.get_by_role("button")).to_have_count(0)
    await expect(chat.input).to_be_focused()
    await expect(chat.reply("Your refund is on its way.")).to_have_count(1)
    await expect(chat.announcer).to_contain_text("replied")
    await screenshot(page, "page-approved")

    # After a reload the card is still in its final state, the reply still once.
    await page.reload()
    await chat.online()
    await expect(chat.cards.locator(".card-title")).to_have_text(["Done"])
    await expect(chat.reply("Your refund is on its way.")).to_have_count(1)
    await expect(chat.replies.locator(".step")).to_have_text(["Order lookup"])


async def parts_of(chat: ChatUI) -> list[str]:
    """The last reply's parts, top to bottom: a text's words, or a tool step's label."""
    return await chat.replies.last.locator(".parts > *").evaluate_all(
        "els => els.map(e => e.classList.contains('step') ? `[${e.innerText.trim()}]`"
        " : e.innerText.trim())"
    )


async def test_text_around_a_tool_call_keeps_its_order_after_a_reload(
    chats: Chats, agent: str, fake_model: FakeAnthropic
) -> None:
    fake_model.enqueue(
        Reply(text="Let me do that.", tool_calls=[LOOKUP]),
        Reply(text="Tool finished: it shipped yesterday."),
    )
    chat = await chats.open(f"?agent={agent}")
    await chat.ask("Where is ORD-1234?")
    await expect(chat.announcer).to_contain_text("replied")
    live = ["Let me do that.", "[Order lookup]", "Tool finished: it shipped yesterday."]
    assert await parts_of(chat) == live
    await screenshot(chat.page, "page-text-around-tool")
    await chat.page.reload()
    await chat.online()
    await expect(chat.reply("Tool finished")).to_have_count(1)
    assert await parts_of(chat) == live  # not one merged bubble under the step
    await screenshot(chat.page, "page-text-around-tool-reloaded")


async def test_a_declined_refund_says_so_in_dark_mode(
    chats: Chats, agent: str, fake_model: FakeAnthropic
) -> None:
    fake_model.enqueue(
        Reply(tool_calls=[REFUND]), Reply(text="All right, I have not refunded anything.")
    )
    chat = await chats.open(f"?agent={agent}")
    await chat.page.emulate_media(color_scheme="dark")
    await chat.ask("Refund ORD-1234")
    card = chat.cards.first
    await expect(card.get_by_role("button", name="Approve")).to_be_visible()
    await screenshot(chat.page, "page-approval-dark")
    await card.get_by_role("button", name="Decline").click()
    await expect(card.locator(".card-title")).to_have_text("You declined")
    await expect(card.locator(".card-result")).to_have_text("Nothing was done.")
    await expect(card).to_have_attribute("data-state", "neutral")  # not an error
    await expect(card.get_by_role("button")).to_have_count(0)
    await expect(chat.input).to_be_focused()
    await expect(chat.reply("I have not refunded anything")).to_have_count(1)
    assert "failed" not in (await chat.thread.inner_text()).lower()
    await screenshot(chat.page, "page-declined-dark")


async def test_a_hand_off_to_a_person_says_who_follows_up(
    chats: Chats, agent: str, fake_model: FakeAnthropic
) -> None:
    fake_model.enqueue(
        Reply(tool_calls=[ToolCall("escalate_to_human", {"reason": "Wants to speak to a person"})]),
        Reply(text="I have passed this on to our team."),
    )
    chat = await chats.open(f"?agent={agent}")
    await chat.ask("I want to talk to a human.")
    reply = chat.reply("I have passed this on to our team.")
    await expect(reply.locator(".step")).to_have_text(["Hand-off to our team"])
    handoff = "A person from our team will follow up in this conversation."
    await expect(reply.locator(".handoff")).to_have_text(handoff)
    await chat.page.reload()
    await chat.online()
    await expect(chat.reply("I have passed this on").locator(".handoff")).to_have_text(handoff)


async def test_the_debug_flag_shows_tool_names_arguments_and_results(
    chats: Chats, agent: str, fake_model: FakeAnthropic
) -> None:
    fake_model.enqueue(Reply(tool_calls=[LOOKUP]), Reply(text="It has shipped."))
    chat = await chats.open(f"?agent={agent}&debug=1")
    await chat.ask("Where is ORD-1234?")
    step = chat.replies.locator(".step.debug")
    await expect(step.locator("code")).to_have_text("order_status")
    await expect(step.locator(".step-state")).to_have_text(" · done")
    await step.locator("summary").click()
    await expect(step.locator(".step-result")).to_contain_text('"carrier": "DHL"')
    await screenshot(chat.page, "page-debug")


async def test_a_new_conversation_starts_afresh(
    chats: Chats, agent: str, fake_model: FakeAnthropic
) -> None:
    fake_model.enqueue(Reply(text="Hello there."))
    chat = await chats.open(f"?agent={agent}")
    await chat.ask("Hi")
    await expect(chat.reply("Hello there.")).to_have_count(1)
    await expect(chat.stop).to_be_hidden()
    first = await session_of(chat.page, agent)
    await chat.page.get_by_role("button", name="Start a new conversation").click()
    await expect(chat.replies).to_have_count(0)
    await expect(chat.starters.first).to_be_visible()
    await expect(chat.input).to_be_focused()
    await chat.page.wait_for_function(
        "([key, first]) => ![null, first].includes(localStorage.getItem(key))",
        arg=[f"parley:{agent}:sessionId", first],
    )
    await chat.page.reload()
    await chat.online()
    await expect(chat.starters.first).to_be_visible()
    await expect(chat.questions).to_have_count(0)  # a reload shows the new conversation


async def test_a_reload_mid_reply_shows_the_answer_once(
    chats: Chats, agent: str, fake_model: FakeAnthropic
) -> None:
    answer = "Your parcel left our warehouse this morning and arrives on Friday."
    fake_model.enqueue(Reply(text=answer, pause_after=6))
    chat = await chats.open(f"?agent={agent}")
    await chat.ask("Where is my parcel?")
    await expect(chat.replies).to_contain_text("Your parcel left our")
    await chat.page.reload()
    await chat.online()
    # The question from the history, the reply so far replayed, then the rest live.
    await expect(chat.replies).to_contain_text("Your parcel left our")
    fake_model.release()
    await expect(chat.reply(answer)).to_have_count(1)
    await expect(chat.stop).to_be_hidden()
    await expect(chat.questions).to_have_text(["Where is my parcel?"])
    await expect(chat.replies).to_have_count(1)


Held = tuple[dict[str, Any], WebSocketRoute, WebSocketRoute]


async def hold_resume(page: Page) -> asyncio.Future[Held]:
    """Route the page's socket through the test, which keeps the first `resume_turn` the
    page sends until the test lets it through: yields (the frame, the page's side of the
    socket, the gateway's side)."""
    held: asyncio.Future[Held] = asyncio.get_running_loop().create_future()

    def route(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()

        def from_page(message: str | bytes) -> None:
            frame = json.loads(message)
            if frame.get("action") == "resume_turn" and not held.done():
                held.set_result((frame, ws, server))
                return
            server.send(message)

        ws.on_message(from_page)

    await page.route_web_socket(re.compile(r"/ws$"), route)
    return held


async def reload_at_the_last_token(
    chats: Chats, agent: str, gateway: GatewayServer, fake_model: FakeAnthropic, answer: str
) -> tuple[ChatUI, Held]:
    """Stream the whole answer, hold the model before its end, reload, and let the reply be
    stored after the page read the history (which so has the question, not the answer) and
    before its `resume_turn` reaches the gateway."""
    fake_model.enqueue(Reply(text=answer, pause_after=chunks(answer)))
    chat = await chats.open(f"?agent={agent}")
    await chat.ask("When does the sale end?")
    await expect(chat.reply(answer)).to_have_count(1)  # every token is on the page
    held = await hold_resume(chat.page)
    await chat.page.reload()
    frame, page_side, server_side = await held
    await expect(chat.questions).to_have_text(["When does the sale end?"])
    await expect(chat.replies).to_have_count(0)
    session = await session_of(chat.page, agent)
    assert frame["requestId"], "the page resumes the question's own turn"
    fake_model.release()
    await turn_finished(gateway, session, frame["requestId"])
    return chat, (frame, page_side, server_side)


async def test_a_reload_at_the_very_end_of_a_reply_replays_it_once(
    chats: Chats, agent: str, gateway: GatewayServer, fake_model: FakeAnthropic
) -> None:
    answer = "The sale ends on Sunday at midnight."
    chat, (frame, _, server_side) = await reload_at_the_last_token(
        chats, agent, gateway, fake_model, answer
    )
    server_side.send(json.dumps(frame))
    # The gateway replays the just-finished turn (PARLEY_TURN_LINGER) by its requestId.
    await expect(chat.reply(answer)).to_have_count(1)
    await expect(chat.stop).to_be_hidden()
    await expect(chat.replies).to_have_count(1)
    await chat.page.reload()
    await chat.online()
    await expect(chat.reply(answer)).to_have_count(1)
    await expect(chat.replies).to_have_count(1)


async def test_a_reload_whose_turn_is_gone_reads_the_history_again(
    chats: Chats, agent: str, gateway: GatewayServer, fake_model: FakeAnthropic
) -> None:
    answer = "The sale ends on Monday at noon."
    chat, (frame, page_side, _) = await reload_at_the_last_token(
        chats, agent, gateway, fake_model, answer
    )
    # As the gateway answers once the turn ended longer ago than the linger.
    error = {"code": "NO_ACTIVE_TURN", "message": "no active turn"}
    page_side.send(
        json.dumps(
            {
                "type": "error",
                "requestId": frame["requestId"],
                "error": error,
                "data": {"requestId": frame["requestId"], "error": error},
                "timestamp": int(time.time() * 1000),
            }
        )
    )
    await expect(chat.reply(answer)).to_have_count(1)
    await expect(chat.replies).to_have_count(1)
    await expect(chat.questions).to_have_count(1)


async def test_a_reload_with_a_card_waiting_shows_it_once_and_it_still_works(
    chats: Chats, agent: str, fake_model: FakeAnthropic
) -> None:
    fake_model.enqueue(Reply(tool_calls=[REFUND]), Reply(text="Refund issued."))
    chat = await chats.open(f"?agent={agent}")
    await chat.ask("Refund ORD-1234 please")
    await expect(chat.cards.get_by_role("button", name="Approve")).to_be_visible()
    await chat.page.reload()
    await chat.online()
    await expect(chat.cards).to_have_count(1)
    await expect(chat.cards.locator(".card-title")).to_have_text("Approval needed")
    await screenshot(chat.page, "page-card-after-reload")
    await chat.cards.get_by_role("button", name="Approve").click()
    await expect(chat.cards.locator(".card-title")).to_have_text("Done")
    await expect(chat.reply("Refund issued.")).to_have_count(1)
    await expect(chat.cards).to_have_count(1)


async def test_stop_keeps_the_partial_answer_also_after_a_reload(
    chats: Chats, agent: str, fake_model: FakeAnthropic
) -> None:
    fake_model.enqueue(
        Reply(text="Our three warehouses are in Leeds, Lyon and Linz.", pause_after=5)
    )
    chat = await chats.open(f"?agent={agent}")
    await chat.ask("Where do you ship from?")
    await expect(chat.replies).to_contain_text("Our three warehou")
    await chat.input.press("Escape")  # Escape stops, as the Stop button does
    reply = chat.replies.last
    await expect(reply.locator(".note")).to_have_text("You stopped this reply.")
    await expect(reply).to_contain_text("Our three warehou")
    await expect(chat.stop).to_be_hidden()
    await expect(chat.input).to_be_focused()
    await screenshot(chat.page, "page-stopped")
    # The server keeps a notice, not the partial text: the page remembers what was shown.
    await chat.page.reload()
    await chat.online()
    await expect(chat.replies.last).to_contain_text("Our three warehou")
    await expect(chat.replies.last.locator(".note")).to_have_text("You stopped this reply.")


async def test_a_failed_reply_says_sorry_and_try_again_works(
    chats: Chats, agent: str, fake_model: FakeAnthropic
) -> None:
    fake_model.enqueue(Reply(status=400, error_message="prompt is too long"))
    chat = await chats.open(f"?agent={agent}")
    await chat.ask("What is your phone number?")
    note = chat.replies.last.locator(".note.error")
    await expect(note).to_contain_text("Sorry, something went wrong while I was answering.")
    shown = await chat.thread.inner_text()
    assert "AGENT_ERROR" not in shown and "prompt is too long" not in shown
    assert not re.search(r"[0-9a-f]{8}-[0-9a-f]{4}", shown)  # no ids either
    await screenshot(chat.page, "page-error")
    fake_model.enqueue(Reply(text="You can call us on 0800 123 456."))
    await note.get_by_role("button", name="Try again").click()
    await expect(chat.reply("You can call us on 0800 123 456.")).to_have_count(1)


async def test_a_refused_message_stays_in_the_box_and_the_running_reply_shows(
    chats: Chats, agent: str, fake_model: FakeAnthropic
) -> None:
    """Two tabs of one visitor: the second sends while the first's reply is running."""
    answer = "We open at nine every weekday."
    fake_model.enqueue(Reply(text=answer, pause_after=3))
    first = await chats.open(f"?agent={agent}")
    second = await chats.open(f"?agent={agent}")
    await first.ask("When do you open?")
    await expect(first.replies).to_contain_text("We open at")
    await second.ask("And on Saturdays?")
    await expect(second.alert).to_contain_text("I'm still answering your previous message.")
    await expect(second.input).to_have_value("And on Saturdays?")
    # The running reply, with its question, now shows in this tab too.
    await expect(second.questions).to_have_text(["When do you open?"])
    await expect(second.replies).to_contain_text("We open at")
    await screenshot(second.page, "page-refused")
    fake_model.release()
    await expect(second.reply(answer)).to_have_count(1)
    await expect(first.reply(answer)).to_have_count(1)
    fake_model.enqueue(Reply(text="On Saturdays we open at ten."))
    await second.alert.get_by_role("button", name="Retry").click()  # once the reply has ended
    await expect(second.reply("On Saturdays we open at ten.")).to_have_count(1)
    await expect(second.input).to_have_value("")


async def test_a_dropped_connection_recovers_and_the_reply_arrives_once(
    chats: Chats, agent: str, gateway: GatewayServer, fake_model: FakeAnthropic
) -> None:
    answer = "Gift cards never expire and work on every order."
    fake_model.enqueue(Reply(text=answer, pause_after=4))
    async with tcp_proxy(gateway.port) as proxy:
        chat = await chats.open(f"?agent={agent}", base=proxy.http_url)
        await chat.ask("Do gift cards expire?")
        await expect(chat.replies).to_contain_text("Gift cards n")
        proxy.cut()
        banner = chat.page.locator(".parley .banner")
        await expect(chat.status).to_have_attribute("data-state", "offline")
        await expect(banner).to_contain_text("Connection lost. Reconnecting…")
        await proxy.wait_refused(3)  # it keeps trying, at once and then every few seconds
        await expect(banner).to_be_visible()
        await expect(chat.status).to_have_attribute("data-state", "offline")
        await screenshot(chat.page, "page-offline")
        fake_model.release()  # the turn goes on without the page
        proxy.restore()
        await chat.online()
        await expect(chat.page.locator(".parley .banner")).to_be_hidden()
        await expect(chat.reply(answer)).to_have_count(1)
        await expect(chat.replies).to_have_count(1)


async def test_going_offline_says_so_at_once_and_coming_back_reconnects(
    chats: Chats, agent: str, fake_model: FakeAnthropic
) -> None:
    chat = await chats.open(f"?agent={agent}")
    await chats.context.set_offline(True)
    # At once, not when the heartbeat (10 s + 5 s) finds the socket dead.
    await expect(chat.status).to_have_attribute("data-state", "offline", timeout=2000)
    await expect(chat.status).to_have_text("Offline")
    await expect(chat.page.locator(".parley .banner")).to_contain_text("You're offline.")
    await screenshot(chat.page, "page-browser-offline")
    await chats.context.set_offline(False)
    await chat.online()
    fake_model.enqueue(Reply(text="Back online."))
    await chat.ask("Are you there?")
    await expect(chat.reply("Back online.")).to_have_count(1)


async def test_a_bad_agent_id_shows_no_chat_and_does_not_connect(chats: Chats) -> None:
    page = await chats.context.new_page()
    chat = ChatUI(page)
    chats.opened.append(chat)
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    async with page.expect_console_message(lambda m: "has no chat here" in m.text):
        await page.goto(f"{chats.base}/?agent={'a' * 300}")
    await expect(page.locator(".parley .unavailable")).to_have_text("This chat isn't available.")
    await expect(chat.status).to_have_attribute("data-state", "unavailable")
    await expect(chat.status).to_have_text("Unavailable")
    await expect(chat.input).to_be_hidden()
    await expect(chat.alert).to_be_hidden()  # not "That message couldn't be sent."
    await screenshot(page, "page-bad-agent-id")
    # Still so once the browser comes back online: it never tries to connect.
    await page.evaluate("window.dispatchEvent(new Event('online'))")
    await expect(chat.status).to_have_attribute("data-state", "unavailable")
    assert sockets == []


async def test_the_heartbeat_replaces_a_half_open_connection(
    chats: Chats, agent: str, gateway: GatewayServer, fake_model: FakeAnthropic
) -> None:
    # A shorter heartbeat than the default (10 s, 5 s), so the test does not wait for it.
    await chats.context.add_init_script(
        "window.ParleyWidget = {heartbeat: {interval: 500, timeout: 1000}}"
    )
    async with tcp_proxy(gateway.port) as proxy:
        chat = await chats.open(f"?agent={agent}", base=proxy.http_url)
        sockets = proxy.accepted
        proxy.freeze()  # nothing arrives, nothing says the socket is gone
        await proxy.wait_accepted(sockets + 1)  # the page gave up on it and connected again
        await chat.online()
        fake_model.enqueue(Reply(text="Still here."))
        await chat.ask("Hello?")
        await expect(chat.reply("Still here.")).to_have_count(1)


async def test_keyboard_only(chats: Chats, agent: str, fake_model: FakeAnthropic) -> None:
    chat = await chats.open(f"?agent={agent}")
    keyboard = chat.page.keyboard
    await expect(chat.input).to_be_focused()  # the page opens ready to type
    before = (await chat.input.bounding_box() or {})["height"]
    await keyboard.type("Please refund ORD-1234.")
    for line in ("It arrived broken.", "The box was crushed.", "Thanks!"):
        await keyboard.press("Shift+Enter")  # a new line, not a send
        await keyboard.type(line)
    grown = (await chat.input.bounding_box() or {})["height"]
    assert grown > before * 2, (before, grown)  # the input grows with its text
    fake_model.enqueue(Reply(tool_calls=[REFUND]), Reply(text="Done: your refund is on its way."))
    await keyboard.press("Enter")
    approve = chat.cards.get_by_role("button", name="Approve")
    await expect(approve).to_be_visible()
    for _ in range(8):  # back from the input to the card's buttons
        if await approve.evaluate("b => b.getRootNode().activeElement === b"):
            break
        await keyboard.press("Shift+Tab")
    await expect(approve).to_be_focused()
    await keyboard.press("Enter")
    await expect(chat.cards.locator(".card-title")).to_have_text("Done")
    await expect(chat.input).to_be_focused()
    await expect(chat.reply("Done: your refund is on its way.")).to_have_count(1)
    await expect(chat.stop).to_be_hidden()  # the reply has ended
    fake_model.enqueue(Reply(text="A long answer that will be stopped early.", pause_after=2))
    await keyboard.type("Tell me everything.")
    await keyboard.press("Enter")
    await expect(chat.stop).to_be_visible()
    await keyboard.press("Escape")
    await expect(chat.replies.last.locator(".note")).to_have_text("You stopped this reply.")
    await expect(chat.input).to_be_focused()


async def test_jump_to_latest_when_reading_back(
    browser: Browser, gateway: GatewayServer, agent: str, fake_model: FakeAnthropic
) -> None:
    context = await browser.new_context(viewport={"width": 420, "height": 520})
    try:
        page = await context.new_page()
        chat = ChatUI(page)
        await page.goto(f"{gateway.http_url}/?agent={agent}")
        await chat.online()
        long = "\n\n".join(
            f"Paragraph {n} of a long answer about delivery times." for n in range(12)
        )
        fake_model.enqueue(Reply(text=long, pause_after=chunks(long) * 3 // 4))
        await chat.ask("Tell me about delivery times.")
        await expect(chat.replies).to_contain_text("Paragraph 8")
        log = page.locator(".parley .log")
        await log.evaluate("l => { l.scrollTop = 0; }")  # the visitor reads back
        assert await log.evaluate("l => l.scrollHeight - l.clientHeight > 100")
        fake_model.release()
        jump = page.get_by_role("button", name="Jump to latest")
        await expect(jump).to_be_visible()
        await screenshot(page, "page-jump-to-latest")
        await jump.click()
        await expect(jump).to_be_hidden()
        assert await log.evaluate("l => l.scrollHeight - l.scrollTop - l.clientHeight < 60")
        chat.errors.check()
    finally:
        await context.close()
