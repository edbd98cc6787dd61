"""The worker's side of the live lane: one connection that NOTIFYs model items as they come.

Every model activity in the process hands its items to the one `LiveNotifier`; a single
task sends whatever has queued up in one statement per round trip, so a busy worker sends
fewer, larger statements instead of one per token. Best effort by design: a failure is
logged and the items are dropped (the durable record has them); the connection is opened
again on the next items.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from parley.logs import get_logger
from parley.storage import live
from parley.storage.db import Conn

log = get_logger(__name__)

MAX_QUEUED = 10_000  # beyond this the lane is lagging: new items are dropped, not queued
RETRY_AFTER_SECONDS = 1.0  # after a failure, items are dropped this long before a reconnect


class LiveNotifier:
    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._queue: list[str] = []
        self._wake = asyncio.Event()
        self._conn: Conn | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._retry_at = 0.0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="live notifier")

    async def aclose(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if self._conn is not None:
            await self._conn.close()

    def send(self, item: live.LiveItem) -> None:
        """Queue `item` for the next round; never blocks, never raises."""
        if len(self._queue) >= MAX_QUEUED or time.monotonic() < self._retry_at:
            return
        payload = live.encode(item)
        if payload is None:
            return
        self._queue.append(payload)
        self._wake.set()

    async def _run(self) -> None:
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            batch, self._queue = self._queue, []
            try:
                conn = await self._connection()
                await live.notify(conn, batch)
            except Exception as err:
                log.warning("live lane unavailable", dropped=len(batch), error=str(err))
                self._retry_at = time.monotonic() + RETRY_AFTER_SECONDS
                await self._drop_connection()

    async def _connection(self) -> Conn:
        if self._conn is None or self._conn.closed:
            self._conn = await Conn.connect(self._conninfo, autocommit=True)
        return self._conn

    async def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
        self._conn = None
