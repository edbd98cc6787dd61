"""Limits on sockets, kept by the gateway process that holds them: frames per second on a
connection (and flooding), connections per client address, and idle sockets.

A socket lives in one process, so these need no shared state. The limits that must hold
across gateways (sessions and turns per minute, daily budgets) are in `gateway.limits`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from starlette.datastructures import Address
from starlette.responses import PlainTextResponse
from starlette.types import Message
from starlette.websockets import WebSocket

from gateway.frames import FrameError, decode_frame
from parley import protocol
from parley.logs import get_logger
from parley.protocol import ErrorCode
from parley.settings import Settings

log = get_logger(__name__)

# A socket is flooding once the frames it was refused within one flood window reach this
# many times what the rate allows in that window (sending at 5x the rate for the window).
FLOOD_FACTOR = 4
# A refused frame up to this size is decoded to echo its requestId; a bigger one is not
# (decoding is the cost the limit is there to bound).
ECHO_MAX_CHARS = 16 * 1024

FLOOD_CLOSE = (1008, "too many frames")
IDLE_CLOSE = (1001, "idle timeout")


def retry_hint(seconds: float) -> str:
    """The phrase "try again in N s", rounded up (to the tenth of a second under one
    second): waiting that long is always enough."""
    if seconds < 1:
        return f"try again in {max(math.ceil(seconds * 10), 1) / 10:.1f} s"
    return f"try again in {math.ceil(seconds)} s"


def client_key(client: Address | None) -> str:
    """The address limits count a client by: its IP, an IPv6 one by its /64 (one host is
    usually given a whole /64). Behind a proxy this is the address the proxy reported
    (uvicorn's proxy headers, from FORWARDED_ALLOW_IPS only)."""
    host = client.host if client is not None else ""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class IpConnections:
    """Open sockets per client address on this gateway, at most `limit` each (0: no cap)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: Counter[str] = Counter()

    @contextmanager
    def hold(self, key: str) -> Iterator[bool]:
        """Count a socket from `key` while the block runs; yields False (and counts
        nothing) when `key` already has `limit` open."""
        if self.limit and self._open[key] >= self.limit:
            yield False
            return
        self._open[key] += 1
        try:
            yield True
        finally:
            self._open[key] -= 1
            if self._open[key] <= 0:
                del self._open[key]

    def count(self, key: str) -> int:
        return self._open[key]


async def refuse_upgrade(websocket: WebSocket, message: str) -> None:
    """Turn the upgrade down before accepting it: HTTP 429 where the server can send one,
    else a close before accept (which the server answers with HTTP 403)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(PlainTextResponse(message, status_code=429))
    else:
        await websocket.close(code=FLOOD_CLOSE[0], reason=message)


class FrameRate:
    """A token bucket of `burst` frames refilled at `rate` per second (0: no limit), and a
    flood detector: refused frames are counted in windows of `flood_window` seconds that
    open at a refusal, and a window that reaches `FLOOD_FACTOR` x rate x window of them
    marks the socket as flooding."""

    def __init__(
        self,
        rate: float,
        burst: int,
        flood_window: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.flood_window = flood_window
        self.flood_threshold = max(1, math.ceil(FLOOD_FACTOR * rate * flood_window))
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()
        self._window_end = -math.inf
        self._refused = 0
        self.flooding = False

    def take(self) -> float | None:
        """Admit one frame (None), or refuse it: the seconds until a frame would be admitted."""
        if not self.rate:
            return None
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens >= 1:
            self._tokens -= 1
            return None
        if now >= self._window_end:
            self._window_end, self._refused = now + self.flood_window, 0
        self._refused += 1
        if self._refused >= self.flood_threshold:
            self.flooding = True
        return (1 - self._tokens) / self.rate

    def full(self) -> bool:
        """The bucket has refilled to its burst: a fresh one would admit the same."""
        if not self.rate:
            return True
        return self._tokens + (self._clock() - self._updated) * self.rate >= self.burst


class SocketGuard:
    """One socket's frame rate, flooding and idleness, for the endpoint's receive loop.

    `closing` is set to the close code and reason when the socket must go: flooding, or no
    frame for `PARLEY_WS_IDLE_TIMEOUT` while `busy()` (a turn is being relayed) is false.
    """

    def __init__(
        self,
        settings: Settings,
        busy: Callable[[], bool],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.frames = FrameRate(
            settings.ws_frame_rate,
            settings.ws_frame_burst,
            settings.ws_flood_window.total_seconds(),
            clock=clock,
        )
        self._idle = settings.ws_idle_timeout.total_seconds()
        self._busy = busy
        self.closing: tuple[int, str] | None = None

    async def receive(self, websocket: WebSocket) -> Message | None:
        """The next message from the client; None when the socket has been idle too long."""
        if not self._idle:
            return await websocket.receive()
        while True:
            try:
                async with asyncio.timeout(self._idle):
                    return await websocket.receive()
            except TimeoutError:
                if not self._busy():
                    self.closing = IDLE_CLOSE
                    return None

    def refuse(self, message: Message) -> dict[str, Any] | None:
        """The RATE_LIMITED error for a frame over the rate (None: go ahead). A frame that
        makes the socket a flood sets `closing` instead."""
        wait = self.frames.take()
        if wait is None:
            return None
        if self.frames.flooding:
            log.warning("closing a flooding socket", refused=self.frames.flood_threshold)
            self.closing = FLOOD_CLOSE
            return None
        rate = f"{self.frames.rate:g}"
        return protocol.error(
            _request_id(message),
            ErrorCode.RATE_LIMITED,
            f"too many frames on this connection (at most {rate} per second); {retry_hint(wait)}",
        )

    async def close(self, websocket: WebSocket) -> None:
        """Close the socket as `closing` says, if it says so (after its writer has stopped)."""
        if self.closing is None:
            return
        code, reason = self.closing
        with suppress(Exception):  # the peer may be gone already
            await websocket.close(code=code, reason=reason)


def _request_id(message: Message) -> str | None:
    text = message.get("text")
    if not isinstance(text, str) or len(text) > ECHO_MAX_CHARS:
        return None
    try:
        frame = decode_frame(text)
    except FrameError as err:
        return err.request_id
    request_id = frame.get("requestId") if isinstance(frame, dict) else None
    return request_id if isinstance(request_id, str) else None
