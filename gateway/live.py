"""The gateway's side of the live lane: one connection LISTENing, items handed to feeds.

While the connection is down (PostgreSQL restarting, a network blip) feeds simply run on
the durable record alone; the listener reconnects with backoff.
"""

from __future__ import annotations

import asyncio

from gateway.feed import Feeds
from parley.logs import get_logger
from parley.storage import live
from parley.storage.db import Conn

log = get_logger(__name__)

MAX_BACKOFF_SECONDS = 10.0


class LiveListener:
    def __init__(self, conninfo: str, feeds: Feeds) -> None:
        self._conninfo = conninfo
        self._feeds = feeds
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="live listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        backoff = 0.2
        while True:
            try:
                async with await Conn.connect(self._conninfo, autocommit=True) as conn:
                    await live.listen(conn)
                    backoff = 0.2
                    async for notify in conn.notifies():
                        item = live.decode(notify.payload)
                        if item is not None:
                            self._feeds.offer(item)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("live lane listener down; retrying", error=str(err))
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
