"""The gateway's one LISTENing connection: the live lane's items handed to feeds, and the
desk's approval changes handed to its waiting polls.

One connection per gateway process whatever the number of turns and desks: each channel's
payloads go to its handler. While the connection is down (PostgreSQL restarting, a network
blip) feeds simply run on the durable record alone and desk polls on their timeouts; the
listener reconnects with backoff and then calls `on_connect` (notifications sent while it
was down are lost, so whoever waits on them re-checks).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from gateway.feed import Feeds
from parley.logs import get_logger
from parley.storage import live
from parley.storage.db import Conn

log = get_logger(__name__)

MAX_BACKOFF_SECONDS = 10.0

Handler = Callable[[str], None]


def live_lane(feeds: Feeds) -> Handler:
    """The live lane's handler: decode each item and offer it to the feeds."""

    def offer(payload: str) -> None:
        item = live.decode(payload)
        if item is not None:
            feeds.offer(item)

    return offer


class LiveListener:
    def __init__(
        self,
        conninfo: str,
        handlers: Mapping[str, Handler],
        on_connect: Callable[[], None] | None = None,
    ) -> None:
        self._conninfo = conninfo
        self._handlers = dict(handlers)
        self._on_connect = on_connect
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
                    for channel in self._handlers:
                        await live.listen(conn, channel)
                    backoff = 0.2
                    if self._on_connect is not None:
                        self._on_connect()
                    async for notify in conn.notifies():
                        handler = self._handlers.get(notify.channel)
                        if handler is not None:
                            handler(notify.payload)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("live lane listener down; retrying", error=str(err))
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
