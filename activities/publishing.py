"""Publishing an activity's events into its turn's stream, in short batches.

`WorkflowStreamClient` batches on its own when used as a context manager, but its exit
cancels a background flusher that waits in `asyncio.wait_for`; on Python 3.11 a cancel
that meets the batch timer there is swallowed (gh-86296) and the exit never returns. So
this publisher drives the client's `flush()` from a loop of its own that is stopped by an
event, never cancelled mid-wait. It also owns the batching policy: the first item goes out
at once (time-to-first-token), later ones as one signal per `batch_interval`.

Events wait in this publisher's own queue and reach the client only at the start of a
round: `flush()` sends until the client's buffer is empty, so events handed over while a
signal is in flight would go out as a second signal right behind it. One signal per round
halves the signals (and workflow tasks) of a streaming turn, which is what load costs.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from types import TracebackType
from typing import Self

from temporalio.contrib.workflow_streams import WorkflowStreamClient

from parley.logs import get_logger
from parley.turn.events import EVENTS_TOPIC, TURN_EVENT, TurnEvent

log = get_logger(__name__)


class TurnPublisher:
    def __init__(self, client: WorkflowStreamClient, batch_interval: timedelta) -> None:
        self._client = client
        self._topic = client.topic(EVENTS_TOPIC, type=TURN_EVENT)
        self._queue: list[TurnEvent] = []
        self._interval = batch_interval.total_seconds()
        self._wake = asyncio.Event()
        self._closing = False
        self._sent_first = False
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def for_current_activity(cls, batch_interval: timedelta) -> TurnPublisher:
        # The client's own flusher is never started (we do not enter it), so its batch
        # interval is irrelevant here.
        return cls(WorkflowStreamClient.from_within_activity(), batch_interval)

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name="turn publisher")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await asyncio.shield(self._task)
        if exc_type is None:
            await self._send()

    def publish(self, event: TurnEvent, *, now: bool = False) -> None:
        """Queue `event`; the first one (or `now=True`) is sent without waiting for a batch."""
        self._queue.append(event)
        if now or not self._sent_first:
            self._sent_first = True
            self._wake.set()

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._send()
            except Exception as err:  # retried on the next round; surfaced at exit
                log.warning("publishing turn events failed", error=str(err))

    async def _send(self) -> None:
        """Hand the queued events to the client and send them (a failed batch stays
        pending in the client and goes first next round)."""
        queued, self._queue = self._queue, []
        for event in queued:
            self._topic.publish(event)
        await self._client.flush()
