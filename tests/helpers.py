"""Test drivers: an in-process gateway server and a WebSocket client that checks every event.

Every event a test receives is parsed with the published client's
`smooth_operator.types.parse_event`; an event it rejects fails the test, because real
clients would silently drop it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from smooth_operator.types import parse_event
from temporalio.client import WorkflowHandle
from websockets.asyncio.client import ClientConnection, connect

from gateway.serve import Listeners
from gateway.services import Services
from parley.settings import Settings

Event = dict[str, Any]

# An admin token long enough for the gateway to accept (PARLEY_ADMIN_TOKEN: 32 at least).
ADMIN_TOKEN = "parley-test-admin-token-0123456789"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class GatewayServer:
    """The real gateway app under uvicorn, on a free port of this test process (and, with
    `admin_port` set, the admin listener on that port)."""

    def __init__(self, settings: Settings) -> None:
        self._listeners = Listeners(settings, port=0)
        self.app = self._listeners.app
        self.port = 0

    async def start(self) -> None:
        await self._listeners.start()
        self.port = self._listeners.port

    async def stop(self) -> None:
        await self._listeners.stop()

    @property
    def services(self) -> Services:
        return self.app.state.services

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@asynccontextmanager
async def running_gateway(settings: Settings) -> AsyncIterator[GatewayServer]:
    """A gateway of its own for one test, stopped however the test ends."""
    server = GatewayServer(settings)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@asynccontextmanager
async def running_worker(settings: Settings, timeout: float = 60) -> AsyncIterator[None]:
    """An in-process worker (`worker.run_worker`) until the block ends."""
    from worker import run_worker

    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_worker(settings, stop, ready))
    async with asyncio.timeout(timeout):
        await asyncio.wait([task, asyncio.create_task(ready.wait())], return_when="FIRST_COMPLETED")
    if task.done():
        task.result()
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def check_event(raw: str) -> Event:
    """Decode one frame and insist the published client accepts it."""
    event = json.loads(raw)
    parse_event(event)
    assert isinstance(event.get("timestamp"), int), event
    return event


class WsClient:
    """A protocol client for tests: send frames, await events with timeouts."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    @classmethod
    async def open(cls, url: str, **kwargs: Any) -> WsClient:
        return cls(await connect(url, max_size=None, **kwargs))

    async def close(self) -> None:
        await self.ws.close()

    async def __aenter__(self) -> WsClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def send(self, frame: Event | str | bytes) -> None:
        await self.ws.send(frame if isinstance(frame, str | bytes) else json.dumps(frame))

    async def recv(self, timeout: float = 10) -> Event:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(raw, str), "server sent a binary frame"
        return check_event(raw)

    async def request(self, frame: Event, timeout: float = 10) -> Event:
        await self.send(frame)
        return await self.recv(timeout)

    async def recv_until(self, done: Callable[[Event], bool], timeout: float = 30) -> list[Event]:
        """Every event up to and including the first one `done` accepts."""
        events: list[Event] = []
        async with asyncio.timeout(timeout):
            while True:
                events.append(await self.recv(timeout))
                if done(events[-1]):
                    return events

    async def create_session(self, agent_id: str = "agent-1", **fields: Any) -> Event:
        reply = await self.request(
            {
                "action": "create_conversation_session",
                "requestId": "cs",
                "agentId": agent_id,
                **fields,
            }
        )
        assert reply["type"] == "immediate_response", reply
        return reply["data"]


async def assert_still_open(client: WsClient) -> None:
    """The socket still answers (a bad frame must not have dropped it)."""
    pong = await client.request({"action": "ping", "requestId": "alive"})
    assert pong["type"] == "pong" and pong["requestId"] == "alive"


TERMINAL = {"eventual_response", "cancelled", "error"}


def is_terminal(request_id: str) -> Callable[[Event], bool]:
    return lambda e: e["type"] in TERMINAL and e.get("requestId") == request_id


async def run_turn(
    client: WsClient,
    session_id: str,
    message: str,
    request_id: str,
    timeout: float = 30,
    **fields: Any,
) -> list[Event]:
    """Send a message and collect its events up to the terminal one."""
    await client.send(
        {
            "action": "send_message",
            "requestId": request_id,
            "sessionId": session_id,
            "message": message,
            **fields,
        }
    )
    return await client.recv_until(is_terminal(request_id), timeout)


def tokens(events: list[Event]) -> str:
    return "".join(e["token"] for e in events if e["type"] == "stream_token")


def kinds(events: list[Event]) -> list[str]:
    """Event types, with stream_chunk refined by what it carries."""
    out = []
    for e in events:
        if e["type"] == "stream_chunk":
            raw = e["data"]["state"]["rawResponse"]
            out.append(f"chunk:{next(iter(raw))}")
        elif e["type"] == "immediate_response":
            out.append(f"immediate:{e['status']}")
        else:
            out.append(e["type"])
    return out


def collapse(seq: list[str]) -> list[str]:
    """Runs of the same kind as one (many tokens read as one `stream_token`)."""
    return [k for i, k in enumerate(seq) if i == 0 or seq[i - 1] != k]


async def history_holds(
    handle: WorkflowHandle[Any, Any], attribute: str, count: int = 1, timeout: float = 30
) -> None:
    """Until the workflow's history holds `count` events with `attribute` (say
    `timer_started_event_attributes`): what a turn did, read from Temporal itself."""
    async with asyncio.timeout(timeout):
        while sum(e.HasField(attribute) for e in (await handle.fetch_history()).events) < count:
            await asyncio.sleep(0.2)
