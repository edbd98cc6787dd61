"""The fake Anthropic server, checked through the real `anthropic` SDK parsing its bytes."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator

import anthropic
import httpx
import pytest
from anthropic.types import TextBlock, ThinkingBlock, ToolUseBlock

from parley.stack.fake_anthropic import FakeAnthropic, Reply, ToolCall, parse_stamps
from parley.stack.processes import ChildProcess

MESSAGES = [{"role": "user", "content": "ping"}]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeAnthropic) -> FakeAnthropic:
    server.reset()
    server.default_reply = Reply(text="Hello from the fake model.")
    return server


@pytest.fixture
async def client(fake: FakeAnthropic) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=fake.base_url, api_key="test-key", max_retries=0
    ) as sdk:
        yield sdk


def stream(client: anthropic.AsyncAnthropic, **kwargs: object):
    return client.messages.stream(model="claude-test", max_tokens=256, messages=MESSAGES, **kwargs)


async def test_thinking_is_streamed_signed_and_must_come_back_unchanged(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake.enqueue(Reply(thinking="Look it up.", text="One moment.", tool_calls=[ToolCall("lookup")]))
    async with stream(client) as s:
        pieces = [piece async for piece in s.text_stream]
        message = await s.get_final_message()
    assert pieces == ["One ", "mome", "nt."]  # thinking is not text
    thinking, text, call = message.content
    assert isinstance(thinking, ThinkingBlock) and thinking.thinking == "Look it up."
    assert thinking.signature and isinstance(text, TextBlock) and isinstance(call, ToolUseBlock)
    result = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id}]}
    sent_back = thinking.model_dump()
    for assistant, refusal in (
        ([text.model_dump(), call.model_dump()], "Expected `thinking`"),
        ([{**sent_back, "thinking": "Edited."}, call.model_dump()], "Invalid `signature`"),
    ):
        messages = [*MESSAGES, {"role": "assistant", "content": assistant}, result]
        with pytest.raises(anthropic.BadRequestError, match=refusal):
            await client.messages.create(model="claude-test", max_tokens=9, messages=messages)
    messages = [*MESSAGES, {"role": "assistant", "content": [sent_back, call.model_dump()]}, result]
    answer = await client.messages.create(model="claude-test", max_tokens=9, messages=messages)
    assert answer.content[0].type == "text"


async def test_streams_text_with_usage(fake: FakeAnthropic, client: anthropic.AsyncAnthropic):
    fake.enqueue(Reply(text="Hello, streaming world!", input_tokens=11, output_tokens=7))
    async with stream(client) as s:
        pieces = [piece async for piece in s.text_stream]
        message = await s.get_final_message()
        assert s.request_id is not None and s.request_id.startswith("req_")

    assert pieces == ["Hell", "o, s", "trea", "ming", " wor", "ld!"]
    assert message.id.startswith("msg_")
    assert message.model == "claude-test"
    assert message.stop_reason == "end_turn"
    (block,) = message.content
    assert isinstance(block, TextBlock) and block.text == "Hello, streaming world!"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (11, 7)
    assert fake.disconnects == 0


async def test_streams_tool_use_with_split_json(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
):
    args = {"city": "Paris", "days": [1, 2, 3], "units": {"temp": "C"}, "note": "naïve ☂"}
    fake.enqueue(Reply(text="Let me check.", tool_calls=[ToolCall("get_weather", args)]))
    json_deltas = 0
    async with stream(client) as s:
        async for event in s:
            if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                json_deltas += 1
        message = await s.get_final_message()

    assert json_deltas >= 4
    assert message.stop_reason == "tool_use"
    text, tool = message.content
    assert isinstance(text, TextBlock) and text.text == "Let me check."
    assert isinstance(tool, ToolUseBlock)
    assert tool.id.startswith("toolu_") and tool.name == "get_weather"
    assert tool.input == args


async def test_non_streaming_create(fake: FakeAnthropic, client: anthropic.AsyncAnthropic):
    call = ToolCall("lookup", {"q": "x"}, id="toolu_fixed")
    fake.enqueue(Reply(text="Sure.", tool_calls=[call], output_tokens=3))
    message = await client.messages.create(model="m", max_tokens=10, messages=MESSAGES)

    assert message.stop_reason == "tool_use"
    assert message.content[0].type == "text" and message.content[0].text == "Sure."
    tool = message.content[1]
    assert isinstance(tool, ToolUseBlock)
    assert (tool.id, tool.name, tool.input) == ("toolu_fixed", "lookup", {"q": "x"})
    assert message.usage.output_tokens == 3 and message.usage.input_tokens > 0
    assert fake.requests[-1].body.get("stream") is None


@pytest.mark.parametrize(
    ("status", "error", "error_type"),
    [
        (500, anthropic.InternalServerError, "api_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (400, anthropic.BadRequestError, "invalid_request_error"),
    ],
)
async def test_error_replies(
    fake: FakeAnthropic,
    client: anthropic.AsyncAnthropic,
    status: int,
    error: type[anthropic.APIStatusError],
    error_type: str,
):
    fake.enqueue(Reply(status=status, error_message="nope"))
    with pytest.raises(error) as caught:
        async with stream(client) as s:
            await s.get_final_message()

    exc = caught.value
    assert exc.status_code == status
    assert exc.type == error_type
    assert exc.api_message == "nope"
    assert exc.request_id is not None and exc.request_id.startswith("req_")
    assert (exc.response.headers.get("retry-after") == "1") is (status == 429)


async def test_error_mid_stream(fake: FakeAnthropic, client: anthropic.AsyncAnthropic):
    fake.enqueue(Reply(text="abcdefgh", chunk_chars=2, error_after=2))
    received: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        async with stream(client) as s:
            async for piece in s.text_stream:
                received.append(piece)

    assert received == ["ab", "cd"]
    assert caught.value.type == "overloaded_error"


async def test_validates_requests_like_the_api(fake: FakeAnthropic):
    url = f"{fake.base_url}/v1/messages"
    good = {"model": "m", "max_tokens": 5, "messages": MESSAGES}
    async with httpx.AsyncClient() as http:
        no_key = await http.post(url, json=good)
        no_tokens = await http.post(
            url, json={"model": "m", "messages": MESSAGES}, headers={"x-api-key": "k"}
        )
        ok = await http.post(url, json=good, headers={"x-api-key": "k"})

    assert no_key.status_code == 401
    assert no_key.json()["error"]["type"] == "authentication_error"
    assert no_tokens.status_code == 400
    assert no_tokens.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
    }
    assert ok.status_code == 200 and ok.json()["content"][0]["text"].startswith("Hello")
    assert len(fake.requests) == 3


async def test_reports_cache_usage(fake: FakeAnthropic, client: anthropic.AsyncAnthropic):
    cached = {"cache_creation_input_tokens": 1500, "cache_read_input_tokens": 4000}
    fake.enqueue(Reply(text="Cached.", input_tokens=20, output_tokens=3, **cached))
    async with stream(client) as s:
        streamed = (await s.get_final_message()).usage
    fake.enqueue(Reply(text="Cached.", input_tokens=20, output_tokens=3, **cached))
    created = (await client.messages.create(model="m", max_tokens=5, messages=MESSAGES)).usage
    for usage in (streamed, created):
        assert usage.input_tokens == 20 and usage.output_tokens == 3
        assert usage.cache_creation_input_tokens == 1500
        assert usage.cache_read_input_tokens == 4000
    # Unscripted, the counts are there and 0, as the API reports them.
    usage = (await client.messages.create(model="m", max_tokens=5, messages=MESSAGES)).usage
    assert (usage.cache_creation_input_tokens, usage.cache_read_input_tokens) == (0, 0)


async def test_rejects_more_than_four_cache_breakpoints(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
):
    mark: dict = {"type": "ephemeral"}
    text = [{"type": "text", "text": f"part {i}", "cache_control": mark} for i in range(3)]
    system = [{"type": "text", "text": "Be brief.", "cache_control": mark}]
    messages: list = [{"role": "user", "content": text}]
    ok = await client.messages.create(model="m", max_tokens=5, system=system, messages=messages)
    assert ok.content
    tool = {"name": "t", "input_schema": {"type": "object"}, "cache_control": mark}
    with pytest.raises(anthropic.BadRequestError) as caught:
        await client.messages.create(
            model="m", max_tokens=5, system=system, messages=messages, tools=[tool]
        )
    assert caught.value.api_message == (
        "A maximum of 4 blocks with cache_control may be provided. Found 5."
    )


async def test_pause_and_release(fake: FakeAnthropic, client: anthropic.AsyncAnthropic):
    fake.enqueue(Reply(text="abcdefgh", chunk_chars=1, pause_after=3))
    received: asyncio.Queue[str] = asyncio.Queue()

    async def consume() -> str:
        async with stream(client) as s:
            async for piece in s.text_stream:
                received.put_nowait(piece)
            return await s.get_final_text()

    task = asyncio.create_task(consume())
    await fake.await_paused(timeout=5)
    async with asyncio.timeout(5):
        assert [await received.get() for _ in range(3)] == ["a", "b", "c"]
    assert not task.done()

    fake.release()
    assert not fake.paused.is_set()
    async with asyncio.timeout(5):
        assert await task == "abcdefgh"
    assert fake.disconnects == 0


@pytest.mark.parametrize(
    "reply",
    [
        Reply(text="x" * 50, chunk_chars=1, pause_after=2),
        Reply(text="x" * 50, chunk_chars=1, delay=30),
    ],
    ids=["paused", "slow"],
)
async def test_detects_client_disconnect(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic, reply: Reply
):
    fake.enqueue(reply)
    async with stream(client) as s:
        async for event in s:
            if event.type == "message_start":
                break  # leaving the block closes the HTTP response mid-stream

    async with asyncio.timeout(5):  # well below `delay`: the server noticed, not finished
        await fake.await_disconnected()
    assert fake.disconnects == 1
    assert not fake.paused.is_set()


async def test_records_requests_and_answers_from_callables(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
):
    fake.enqueue(lambda body: Reply(text=f"echo:{body['messages'][-1]['content']}"))
    async with stream(client, system="Be brief.") as s:
        first = await s.get_final_text()
    second = await client.messages.create(model="m2", max_tokens=5, messages=MESSAGES)

    recorded = await fake.await_requests(2, timeout=5)
    assert first == "echo:ping"
    assert second.content[0].type == "text"
    assert second.content[0].text == "Hello from the fake model."
    assert fake.pending == 0
    assert recorded[0].path == "/v1/messages"
    assert recorded[0].body["stream"] is True and recorded[0].body["system"] == "Be brief."
    assert recorded[0].headers["authorization"] == "Bearer test-key"
    assert "anthropic-version" in recorded[0].headers
    assert recorded[1].body["model"] == "m2"
    with pytest.raises(TimeoutError):
        fake.wait_for_requests(3, timeout=0.05)


async def test_stamps_measure_delivery_latency(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
):
    fake.enqueue(Reply(stamp=True, deltas=5, interval=0.02))
    latencies: list[float] = []
    async with stream(client) as s:
        async for piece in s.text_stream:
            (sent,) = parse_stamps(piece)
            latencies.append(time.time() - sent)
        stamps = parse_stamps(await s.get_final_text())

    assert len(stamps) == 5 and stamps == sorted(stamps)
    assert stamps[-1] - stamps[0] >= 4 * 0.02 * 0.8
    assert all(-0.01 < latency < 1.0 for latency in latencies)


def test_sync_client_and_restart():
    fake = FakeAnthropic()
    with fake:
        fake.enqueue(Reply(text="sync hello"))
        sdk = anthropic.Anthropic(base_url=fake.base_url, api_key="k", max_retries=0)
        with sdk.messages.stream(model="m", max_tokens=5, messages=MESSAGES) as s:
            assert s.get_final_text() == "sync hello"
        url = fake.base_url
    with pytest.raises(anthropic.APIConnectionError):
        sdk.messages.create(model="m", max_tokens=5, messages=MESSAGES)
    with fake:  # restarting keeps the port, so a URL handed to a subprocess stays valid
        assert fake.base_url == url
        message = sdk.messages.create(model="m", max_tokens=5, messages=MESSAGES)
        assert message.content[0].type == "text"


async def test_stop_ends_running_streams_with_an_api_error():
    fake = FakeAnthropic().start()
    fake.enqueue(Reply(text="abcdef", chunk_chars=1, pause_after=1))
    async with anthropic.AsyncAnthropic(base_url=fake.base_url, api_key="k", max_retries=0) as sdk:

        async def consume() -> str:
            async with stream(sdk) as s:
                return await s.get_final_text()

        task = asyncio.create_task(consume())
        await fake.await_paused(timeout=5)
        await asyncio.to_thread(fake.stop)
        with pytest.raises(anthropic.APIStatusError) as caught:
            await task
    assert caught.value.type == "api_error"
    assert fake.disconnects == 0


async def test_runs_as_a_process_of_its_own():
    argv = ["-m", "parley.stack.fake_anthropic", "--stamp-deltas", "5", "--stamp-interval", "0"]
    child = ChildProcess("fake model", [sys.executable, *argv], capture=True)
    try:
        line = await child.wait_for_line("serving on", timeout=30)
        base_url = line.split()[-1]
        sdk = anthropic.AsyncAnthropic(base_url=base_url, api_key="k", max_retries=0)
        async with sdk, stream(sdk) as s:
            text = await s.get_final_text()
        assert len(parse_stamps(text)) == 5
        child.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await child.exited() == 0
    finally:
        child.stop()
