"""A local Anthropic Messages API that the real `anthropic` SDK talks to over real HTTP.

Mocks inside the SDK would skip the parts that break in production (SSE framing, partial
tool JSON, error bodies, retries, dropped connections), so this serves real bytes:
`POST /v1/messages` answers with the same SSE events or Message JSON the API sends.

It runs uvicorn on its own event loop in a background thread, so sync code, async tests
and other processes (a worker subprocess, by URL) can all use it::

    with FakeAnthropic() as fake:
        fake.enqueue(Reply(text="Hi!"), Reply(tool_calls=[ToolCall("lookup", {"q": "x"})]))
        client = anthropic.AsyncAnthropic(base_url=fake.base_url, api_key="test-key")

Each POST takes the next scripted reply (FIFO), else `default_reply`. A script entry may
be a `Reply` or a callable that gets the request body and returns one.

As a process of its own (the benches, so the model's CPU is not the client's), it answers
every request alike and prints `serving on URL` once it accepts connections::

    python -m parley.stack.fake_anthropic [--port N] [--stamp-deltas 100 --stamp-interval 0.01]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import math
import re
import secrets
import signal
import socket
import string
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import uvicorn

JSONDict = dict[str, Any]
ReplyFactory = Callable[[JSONDict], "Reply"]

MAX_CACHE_BREAKPOINTS = 4  # blocks with `cache_control` the API accepts in one request

# What the real API calls each failure, by HTTP status.
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}

_ALNUM = string.ascii_letters + string.digits
_STAMP = re.compile(r"<(\d+\.\d+)>")


def _ident(prefix: str) -> str:
    """An id shaped like the API's (`msg_01…`, `toolu_01…`, `req_01…`)."""
    return prefix + "01" + "".join(secrets.choice(_ALNUM) for _ in range(22))


def _tokens(text: str) -> int:
    """A rough token count (4 characters a token), so usage is plausible without config."""
    return max(1, math.ceil(len(text) / 4))


def _chunks(text: str, size: int) -> list[str]:
    size = max(1, size)
    return [text[i : i + size] for i in range(0, len(text), size)]


def cache_breakpoints(body: JSONDict) -> int:
    """How many blocks of a request (tools, system, message content) carry `cache_control`."""
    system = body.get("system")
    blocks: list[Any] = [*(body.get("tools") or []), *(system if isinstance(system, list) else [])]
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            blocks += content
    return sum(isinstance(b, dict) and b.get("cache_control") is not None for b in blocks)


def parse_stamps(text: str) -> list[float]:
    """The send times (`time.time()`) a `Reply(stamp=True)` stream embedded in its text."""
    return [float(m) for m in _STAMP.findall(text)]


@dataclass
class ToolCall:
    """One `tool_use` block of a reply."""

    name: str
    input: JSONDict = field(default_factory=dict)
    id: str = field(default_factory=lambda: _ident("toolu_"))


@dataclass
class Reply:
    """What the fake model answers to one request.

    Text is streamed first (in `chunk_chars` pieces), then each tool call as a `tool_use`
    block whose JSON input arrives in `json_chunk_chars` pieces. Usage reports the scripted
    cache writes and reads (the server caches nothing: the script says what the API would
    have). A `status` other than 200 answers with the API's error JSON instead; `error_after`
    instead fails mid-stream with an SSE `error` event, as the API does when it overloads
    during generation.
    """

    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    # A signed `thinking` block first, as models with thinking on by default send. Like the
    # API, a request that goes on from this reply's tool calls must send it back unchanged,
    # first in that assistant message, or is refused with a 400.
    thinking: str | None = None
    input_tokens: int | None = None  # None: estimated from the request's size, less the cache's
    output_tokens: int | None = None  # None: estimated from the output's size
    cache_creation_input_tokens: int = 0  # prompt tokens reported as written to the cache
    cache_read_input_tokens: int = 0  # prompt tokens reported as read from the cache
    stop_reason: str | None = None  # None: "tool_use" with tool calls, else "end_turn"
    status: int = 200
    error_type: str | None = None  # None: the API's type for `status` (api_error if unknown)
    error_message: str = "Fake failure."
    retry_after: float | None = 1.0  # `retry-after` header on 429 replies
    error_after: int | None = None  # send an SSE `error` event after this many text deltas
    chunk_chars: int = 4
    json_chunk_chars: int = 8
    delay: float = 0.0  # seconds before each delta (non-streaming: before the body)
    pause_after: int | None = None  # after this many text deltas, wait for `release()`
    stamp: bool = False  # bench mode: `deltas` deltas every `interval`s, each its send time
    deltas: int = 10
    interval: float = 0.01


@dataclass(frozen=True)
class RecordedRequest:
    """A request as it arrived: the parsed JSON body ({} if unparseable), lowercased headers."""

    body: JSONDict
    headers: dict[str, str]
    path: str
    received_at: float


class _Disconnected(Exception):
    """The client went away before the response finished."""


class _Stopped(Exception):
    """The fake server is stopping; the response is ended with an API error."""


class _Exchange:
    """One HTTP exchange: sends ASGI messages, notices the client hanging up."""

    def __init__(
        self, send: Callable[[JSONDict], Awaitable[None]], stopping: asyncio.Event
    ) -> None:
        self._send = send
        self.request_id = _ident("req_")
        self.gone = asyncio.Event()
        self.stopping = stopping
        self.started = self.finished = False

    async def watch(self, receive: Callable[[], Awaitable[JSONDict]]) -> None:
        """Wait for `http.disconnect`; uvicorn's `send` silently drops data after one."""
        while (await receive())["type"] != "http.disconnect":
            pass
        if not self.finished:
            self.gone.set()

    def check(self) -> None:
        if self.gone.is_set():
            raise _Disconnected
        if self.stopping.is_set():
            raise _Stopped

    async def start(
        self,
        status: int,
        content_type: str,
        extra: dict[str, str] | None = None,
        *,
        check: bool = True,
    ) -> None:
        headers = {"content-type": content_type, "request-id": self.request_id, **(extra or {})}
        if check:
            self.check()
        self.started = True
        await self._send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
            }
        )

    async def body(self, data: bytes, *, more: bool, check: bool = True) -> None:
        if check:
            self.check()
        if not more:
            self.finished = True
        await self._send({"type": "http.response.body", "body": data, "more_body": more})

    async def json(
        self,
        status: int,
        payload: JSONDict,
        extra: dict[str, str] | None = None,
        *,
        check: bool = True,
    ) -> None:
        await self.start(status, "application/json", extra, check=check)
        await self.body(json.dumps(payload).encode(), more=False, check=check)

    async def event(self, data: JSONDict, *, last: bool = False, check: bool = True) -> None:
        """One SSE event; its name is the payload's `type`, as the API sends it."""
        raw = f"event: {data['type']}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
        await self.body(raw.encode(), more=not last, check=check)

    async def sleep(self, seconds: float) -> None:
        """Sleep, but stop at once if the client disconnects or the server stops."""
        self.check()
        if seconds > 0:
            await self._wait(timeout=seconds)

    async def until(self, event: asyncio.Event) -> None:
        """Wait for `event`, but stop at once if the client disconnects or the server stops."""
        await self._wait(event)

    async def _wait(self, *events: asyncio.Event, timeout: float | None = None) -> None:
        waits = {asyncio.ensure_future(e.wait()) for e in (*events, self.gone, self.stopping)}
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        self.check()

    async def abort(self, message: str) -> None:
        """End the response with an `api_error`, however far it got."""
        error = {"type": "error", "error": {"type": "api_error", "message": message}}
        if not self.started:
            await self.json(500, error, check=False)
        elif not self.finished:
            await self.event(error, last=True, check=False)


class _Server(uvicorn.Server):
    """uvicorn that says when it is listening, so `start()` need not poll."""

    def __init__(self, config: uvicorn.Config, ready: Callable[[], None]) -> None:
        super().__init__(config)
        self._ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self._ready()


class FakeAnthropic:
    """The fake API server; see the module docstring. Thread-safe to script and inspect."""

    def __init__(self, *, port: int = 0) -> None:
        self._port = port
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._script: deque[Reply | ReplyFactory] = deque()
        self._requests: list[RecordedRequest] = []
        self._waiters: set[asyncio.Event] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = asyncio.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.default_reply: Reply | ReplyFactory = Reply(text="Hello from the fake model.")
        self._signing_key = secrets.token_bytes(32)
        self._thought: dict[str, JSONDict] = {}  # tool_use id -> the thinking block before it
        self.paused = threading.Event()  # set while any stream waits at its `pause_after`
        self.disconnected = threading.Event()  # set once a client hangs up mid-response
        self.disconnects = 0

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> Self:
        """Serve on 127.0.0.1 from a background thread; returns once it accepts connections."""
        if self._thread is not None:
            raise RuntimeError("already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit TCP_NODELAY, as the real API's do: without it the
        # first SSE bytes on a reused connection wait ~40 ms for the client's delayed ACK.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", self._port))
        self._port = sock.getsockname()[1]
        ready = threading.Event()
        self._stopping = asyncio.Event()  # binds to the server thread's loop on first use

        def on_ready() -> None:
            self._loop = asyncio.get_running_loop()
            ready.set()

        config = uvicorn.Config(
            self._app,
            interface="asgi3",
            loop="asyncio",
            lifespan="off",
            log_level="warning",
            access_log=False,
        )
        self._server = _Server(config, on_ready)
        self._thread = threading.Thread(
            target=self._run, args=(self._server, sock, ready), name="fake-anthropic", daemon=True
        )
        self._thread.start()
        if not ready.wait(timeout) or not self._server.started:
            self.stop()
            raise RuntimeError("fake Anthropic server did not start")
        return self

    @staticmethod
    def _run(server: _Server, sock: socket.socket, ready: threading.Event) -> None:
        try:
            server.run(sockets=[sock])
        finally:
            ready.set()  # if startup failed, `start()` need not wait out its timeout

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving; responses still running end with an `api_error`."""
        self._call_soon(self._stopping.set)
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self._server = self._thread = self._loop = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """What to pass as the SDK's `base_url` (no trailing slash, no `/v1`)."""
        return f"http://127.0.0.1:{self._port}"

    # -- scripting and inspection -------------------------------------------------------

    def enqueue(self, *replies: Reply | ReplyFactory) -> None:
        """Queue replies for the next requests, one each, in order."""
        with self._lock:
            self._script.extend(replies)

    @property
    def pending(self) -> int:
        """Scripted replies not yet used."""
        with self._lock:
            return len(self._script)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the requests received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def wait_for_requests(self, n: int, timeout: float = 10.0) -> list[RecordedRequest]:
        """Block until at least `n` requests arrived; raise TimeoutError otherwise."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self._requests) >= n, timeout):
                raise TimeoutError(f"{len(self._requests)} of {n} requests arrived")
            return list(self._requests)

    async def await_requests(self, n: int, timeout: float = 10.0) -> list[RecordedRequest]:
        """`wait_for_requests` for async tests, without blocking their event loop."""
        return await asyncio.to_thread(self.wait_for_requests, n, timeout)

    def wait_paused(self, timeout: float = 10.0) -> None:
        """Block until a stream waits at its `pause_after`; raise TimeoutError otherwise."""
        if not self.paused.wait(timeout):
            raise TimeoutError("no stream paused")

    async def await_paused(self, timeout: float = 10.0) -> None:
        await asyncio.to_thread(self.wait_paused, timeout)

    def wait_disconnected(self, timeout: float = 10.0) -> None:
        """Block until a client hung up mid-response; raise TimeoutError otherwise."""
        if not self.disconnected.wait(timeout):
            raise TimeoutError("no client disconnected")

    async def await_disconnected(self, timeout: float = 10.0) -> None:
        await asyncio.to_thread(self.wait_disconnected, timeout)

    def release(self) -> None:
        """Let every currently paused stream continue."""
        with self._lock:
            waiters = list(self._waiters)
            self._waiters.clear()
            self.paused.clear()
        for waiter in waiters:
            self._call_soon(waiter.set)

    def _call_soon(self, callback: Callable[[], object]) -> None:
        """Run `callback` on the server's loop, if it is still running."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                self._loop.call_soon_threadsafe(callback)

    def reset(self) -> None:
        """Forget script, requests and disconnects, and release paused streams (for reuse)."""
        self.release()
        with self._lock:
            self._script.clear()
            self._requests.clear()
            self._thought.clear()
            self.disconnects = 0
            self.disconnected.clear()

    # -- the server side (runs on the server thread's loop) ------------------------------

    async def _app(self, scope: JSONDict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        ex = _Exchange(send, self._stopping)
        if scope["method"] != "POST" or scope["path"] != "/v1/messages":
            await self._error(ex, 404, "not_found_error", f"Not found: {scope['path']}")
            return
        raw = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers: dict[str, str] = {}
        for key, value in scope["headers"]:
            name = key.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[name] = f"{headers[name]}, {text}" if name in headers else text
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        recorded = RecordedRequest(
            body if isinstance(body, dict) else {}, headers, scope["path"], time.time()
        )
        with self._arrived:
            self._requests.append(recorded)
            self._arrived.notify_all()

        watcher = asyncio.create_task(ex.watch(receive))
        try:
            await self._respond(ex, headers, body)
        except _Disconnected:
            with self._lock:
                self.disconnects += 1
            self.disconnected.set()
        except _Stopped:
            await ex.abort("The fake Anthropic server stopped.")
        finally:
            watcher.cancel()

    async def _respond(self, ex: _Exchange, headers: dict[str, str], body: Any) -> None:
        # This SDK (2.x) sends `api_key` as `Authorization: Bearer`, older ones as `x-api-key`.
        if not headers.get("x-api-key") and not headers.get("authorization"):
            await self._error(ex, 401, "authentication_error", "x-api-key header is required")
            return
        if not isinstance(body, dict):
            await self._error(ex, 400, "invalid_request_error", "Request body is not JSON")
            return
        for key in ("model", "max_tokens", "messages"):
            if key not in body:
                await self._error(ex, 400, "invalid_request_error", f"{key}: Field required")
                return
        found = cache_breakpoints(body)
        if found > MAX_CACHE_BREAKPOINTS:
            message = (
                f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be"
                f" provided. Found {found}."
            )
            await self._error(ex, 400, "invalid_request_error", message)
            return
        problem = self._thinking_problem(body["messages"])
        if problem is not None:
            await self._error(ex, 400, "invalid_request_error", problem)
            return
        try:
            reply = self._next_reply(body)
        except Exception as exc:
            await self._error(ex, 500, "api_error", f"fake reply factory raised {exc!r}")
            return
        if reply.status != 200:
            extra = {}
            if reply.status == 429 and reply.retry_after is not None:
                extra["retry-after"] = f"{reply.retry_after:g}"
            error_type = reply.error_type or ERROR_TYPES.get(reply.status, "api_error")
            await self._error(ex, reply.status, error_type, reply.error_message, extra)
            return
        if body.get("stream"):
            await self._stream(ex, reply, body)
        else:
            await self._message(ex, reply, body)

    def _next_reply(self, body: JSONDict) -> Reply:
        with self._lock:
            entry = self._script.popleft() if self._script else self.default_reply
        reply = entry if isinstance(entry, Reply) else entry(body)
        if reply.thinking is not None:
            block = self._thinking_block(reply.thinking)
            with self._lock:
                self._thought.update((call.id, block) for call in reply.tool_calls)
        return reply

    def _thinking_block(self, thinking: str) -> JSONDict:
        mac = hmac.new(self._signing_key, thinking.encode(), hashlib.sha256).digest()
        return {
            "type": "thinking",
            "thinking": thinking,
            "signature": base64.b64encode(mac).decode(),
        }

    def _thinking_problem(self, messages: Any) -> str | None:
        """What the API would refuse: the last assistant message goes on from tool calls
        that came after a thinking block, and does not start with that block unchanged."""
        if not isinstance(messages, list):
            return None
        last = next((m for m in reversed(messages) if m.get("role") == "assistant"), None)
        content = last.get("content") if isinstance(last, dict) else None
        if not isinstance(content, list) or not content:
            return None
        ids = [b.get("id") for b in content if b.get("type") == "tool_use"]
        with self._lock:
            expected = next((self._thought[i] for i in ids if i in self._thought), None)
        if expected is None:
            return None
        first = {k: v for k, v in content[0].items() if k != "cache_control"}
        if first.get("type") != "thinking":
            return (
                f"Expected `thinking` or `redacted_thinking`, but found `{first.get('type')}`."
                " With thinking on, an assistant message that goes on from tool use must"
                " start with the thinking block it was sent"
            )
        if first != expected:
            return "Invalid `signature` in `thinking` block"
        return None

    async def _error(
        self,
        ex: _Exchange,
        status: int,
        error_type: str,
        message: str,
        extra: dict[str, str] | None = None,
    ) -> None:
        payload = {"type": "error", "error": {"type": error_type, "message": message}}
        await ex.json(status, payload, extra)

    async def _pause(self, ex: _Exchange) -> None:
        waiter = asyncio.Event()
        with self._lock:
            self._waiters.add(waiter)
            self.paused.set()
        try:
            await ex.until(waiter)
        finally:
            with self._lock:
                self._waiters.discard(waiter)
                if not self._waiters:
                    self.paused.clear()

    @staticmethod
    def _usage(reply: Reply, body: JSONDict, text: str) -> JSONDict:
        """The reply's usage as the API reports it: `input_tokens` counts the uncached prompt
        tokens only, and the cache counts are always there (0 when nothing was cached)."""
        prompt = json.dumps([body.get("system"), body.get("messages"), body.get("tools")])
        if reply.stamp:
            text = "<0000000000.000000>" * reply.deltas
        out = (reply.thinking or "") + text
        out += "".join(json.dumps(call.input) for call in reply.tool_calls)
        cached = reply.cache_creation_input_tokens + reply.cache_read_input_tokens
        input_tokens = reply.input_tokens
        if input_tokens is None:
            input_tokens = max(1, _tokens(prompt) - cached)
        output_tokens = reply.output_tokens if reply.output_tokens is not None else _tokens(out)
        return {
            "input_tokens": input_tokens,
            "cache_creation_input_tokens": reply.cache_creation_input_tokens,
            "cache_read_input_tokens": reply.cache_read_input_tokens,
            "output_tokens": output_tokens,
        }

    @staticmethod
    def _stop_reason(reply: Reply) -> str:
        return reply.stop_reason or ("tool_use" if reply.tool_calls else "end_turn")

    async def _message(self, ex: _Exchange, reply: Reply, body: JSONDict) -> None:
        """A non-streaming reply: the whole Message JSON at once."""
        if reply.pause_after is not None:
            await self._pause(ex)
        await ex.sleep(reply.delay)
        text = reply.text
        if reply.stamp:
            text = "".join(f"<{time.time():.6f}>" for _ in range(reply.deltas))
        content: list[JSONDict] = []
        if reply.thinking is not None:
            content.append(self._thinking_block(reply.thinking))
        if text or not reply.tool_calls:
            content.append({"type": "text", "text": text})
        content += [
            {"type": "tool_use", "id": call.id, "name": call.name, "input": call.input}
            for call in reply.tool_calls
        ]
        message = {
            "id": _ident("msg_"),
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": self._stop_reason(reply),
            "stop_sequence": None,
            "usage": self._usage(reply, body, text),
        }
        await ex.json(200, message)

    async def _stream(self, ex: _Exchange, reply: Reply, body: JSONDict) -> None:
        """A streaming reply, event for event as the API sends it."""
        usage = self._usage(reply, body, reply.text)
        await ex.start(200, "text/event-stream; charset=utf-8", {"cache-control": "no-cache"})
        start = {
            "id": _ident("msg_"),
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**usage, "output_tokens": 1},
        }
        await ex.event({"type": "message_start", "message": start})
        await ex.event({"type": "ping"})
        index = 0
        if reply.thinking is not None:
            await self._thinking(ex, reply)
            index = 1
        if reply.text or reply.stamp or not reply.tool_calls:
            block: JSONDict = {"type": "text", "text": ""}
            await ex.event({"type": "content_block_start", "index": index, "content_block": block})
            if not await self._text_deltas(ex, reply, index):
                return
            await ex.event({"type": "content_block_stop", "index": index})
            index += 1
        for call in reply.tool_calls:
            block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
            await ex.event({"type": "content_block_start", "index": index, "content_block": block})
            # Like the API: an empty first piece, then the JSON in arbitrary slices.
            for piece in ["", *_chunks(json.dumps(call.input), reply.json_chunk_chars)]:
                await ex.sleep(reply.delay)
                delta = {"type": "input_json_delta", "partial_json": piece}
                await ex.event({"type": "content_block_delta", "index": index, "delta": delta})
            await ex.event({"type": "content_block_stop", "index": index})
            index += 1
        await ex.event(
            {
                "type": "message_delta",
                "delta": {"stop_reason": self._stop_reason(reply), "stop_sequence": None},
                "usage": usage,
            }
        )
        await ex.event({"type": "message_stop"}, last=True)

    async def _thinking(self, ex: _Exchange, reply: Reply) -> None:
        """Block 0: the reply's thinking in pieces, then its signature, as the API streams it."""
        assert reply.thinking is not None
        signed = self._thinking_block(reply.thinking)
        start = {"type": "thinking", "thinking": "", "signature": ""}
        await ex.event({"type": "content_block_start", "index": 0, "content_block": start})
        for piece in _chunks(reply.thinking, reply.chunk_chars):
            await ex.sleep(reply.delay)
            delta = {"type": "thinking_delta", "thinking": piece}
            await ex.event({"type": "content_block_delta", "index": 0, "delta": delta})
        delta = {"type": "signature_delta", "signature": signed["signature"]}
        await ex.event({"type": "content_block_delta", "index": 0, "delta": delta})
        await ex.event({"type": "content_block_stop", "index": 0})

    async def _text_deltas(self, ex: _Exchange, reply: Reply, index: int) -> bool:
        """Stream block `index`'s text; False if the stream ended with an `error` event."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        count = len(_chunks(reply.text, reply.chunk_chars)) if not reply.stamp else reply.deltas
        pieces = iter(_chunks(reply.text, reply.chunk_chars))
        for sent in range(count + 1):
            if reply.pause_after == sent:
                await self._pause(ex)
                began = loop.time() - sent * reply.interval  # stamps resume their pace
            if reply.error_after == sent:
                error_type = reply.error_type or "overloaded_error"
                error = {"type": error_type, "message": reply.error_message}
                await ex.event({"type": "error", "error": error}, last=True)
                return False
            if sent == count:
                return True
            if reply.stamp:
                await ex.sleep(began + sent * reply.interval - loop.time())
                text = f"<{time.time():.6f}>"
            else:
                await ex.sleep(reply.delay)
                text = next(pieces)
            delta = {"type": "text_delta", "text": text}
            await ex.event({"type": "content_block_delta", "index": index, "delta": delta})
        return True


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGINT or SIGTERM (see the module docstring)."""
    parser = argparse.ArgumentParser(description="A local Anthropic Messages API.")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument(
        "--stamp-deltas", type=int, help="answer in stamp mode: this many text deltas a reply"
    )
    parser.add_argument(
        "--stamp-interval", type=float, default=0.01, help="seconds between stamped deltas"
    )
    args = parser.parse_args(argv)
    fake = FakeAnthropic(port=args.port)
    if args.stamp_deltas:
        fake.default_reply = Reply(
            stamp=True, deltas=args.stamp_deltas, interval=args.stamp_interval
        )
    # Blocked before the server thread starts (it inherits the mask), taken here in order.
    stop = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    with fake:
        print(f"fake Anthropic API serving on {fake.base_url}", flush=True)
        signal.sigwait(stop)


if __name__ == "__main__":
    main()
