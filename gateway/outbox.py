"""One outbound writer per WebSocket connection.

Everything a connection says goes through its `Outbox`: handlers and turn relays enqueue
events without waiting, and a single task serialises and writes them, so frames are never
interleaved and a slow client only ever slows itself. A client that stops reading long
enough to pile up `max_pending` events is disconnected (1013, try again later); its turns
keep running and it can re-attach with `resume_turn`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.websockets import WebSocket

from parley.logs import get_logger

log = get_logger(__name__)

_CLOSE = object()


class Outbox:
    def __init__(self, websocket: WebSocket, *, max_pending: int = 10_000) -> None:
        self._ws = websocket
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._max_pending = max_pending
        self._closed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-writer")

    def send(self, event: dict[str, Any]) -> None:
        """Queue `event` for the writer; never blocks, never raises."""
        if self._closed.is_set():
            return
        if self._queue.qsize() >= self._max_pending:
            log.warning("client too slow, disconnecting", pending=self._queue.qsize())
            self._closed.set()
            self._queue.put_nowait(_CLOSE)
            return
        self._queue.put_nowait(event)

    async def aclose(self) -> None:
        """Stop the writer (pending events are dropped: the peer is gone or going)."""
        self._closed.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        try:
            while True:
                item = await self._queue.get()
                if item is _CLOSE:
                    await self._ws.close(code=1013, reason="client too slow")
                    return
                await self._ws.send_text(json.dumps(item, separators=(",", ":")))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the socket went away mid-write
            log.debug("outbox writer stopped", error=str(exc))
        finally:
            self._closed.set()
