"""Publishing a model call's items: to the live lane at once, to the durable record in
coarse batches.

Each item is numbered (model call, attempt, seq) here, the same on both lanes. The live
lane (`activities.live`) carries the latency: every gateway relaying the turn has the item
a database round trip after the model wrote it. The durable record (the workflow's stream)
is what `resume_turn` replays and what a gateway falls back on when the live lane lags or
is off: one signal per `batch_interval` (hundreds of milliseconds), plus one at the end of
the call, so a turn's signals grow with its duration, not with its tokens. Without a live
lane the first item goes out at once, as the relay alone must carry time-to-first-token.

`WorkflowStreamClient` batches on its own when used as a context manager, but its exit
cancels a background flusher that waits in `asyncio.wait_for`; on Python 3.11 a cancel
that meets the batch timer there is swallowed (gh-86296) and the exit never returns. So
this publisher drives the client's `flush()` from a loop of its own that is stopped by an
event, never cancelled mid-wait. Events wait in this publisher's queue and reach the client
only at the start of a round, so one round is one signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Self

from temporalio.contrib.workflow_streams import WorkflowStreamClient
from temporalio.service import RPCError, RPCStatusCode

from activities.live import LiveNotifier
from parley.logs import get_logger
from parley.storage.live import LiveItem, turn_key
from parley.turn.events import EVENTS_TOPIC, TURN_EVENT, Reset, Token, TurnEvent

log = get_logger(__name__)


@dataclass(frozen=True)
class CallPosition:
    """Where a model call's items stand in its turn (see `parley.turn.events.Token`)."""

    turn_id: str
    call: int
    attempt: int
    after: int  # items the workflow published before this call


class TurnPublisher:
    def __init__(
        self,
        client: WorkflowStreamClient,
        position: CallPosition,
        batch_interval: timedelta,
        live: LiveNotifier | None,
    ) -> None:
        self._client = client
        self._topic = client.topic(EVENTS_TOPIC, type=TURN_EVENT)
        self._position = position
        self._turn_key = turn_key(position.turn_id)
        self._live = live
        self._seq = 0
        self._queue: list[TurnEvent] = []
        self._interval = batch_interval.total_seconds()
        self._wake = asyncio.Event()
        self._closing = False
        self._gone = False  # the turn's workflow closed: nothing more is published
        self._sent_first = live is not None  # with a live lane the first item waits too
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def for_current_activity(
        cls, position: CallPosition, batch_interval: timedelta, live: LiveNotifier | None
    ) -> TurnPublisher:
        # The client's own flusher is never started (we do not enter it), so its batch
        # interval is irrelevant here.
        return cls(WorkflowStreamClient.from_within_activity(), position, batch_interval, live)

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
        if self._gone:
            return
        # The last round sent the queue; this retries a batch that failed in it. After a
        # failed call its error is the one that matters (the retry's reset follows).
        try:
            await self._send()
        except Exception:
            if exc_type is None:
                raise

    def reset(self) -> None:
        """Open a retried attempt: clients drop the text of the failed one."""
        p = self._position
        self._publish(Reset(p.attempt, p.call, self._next_seq()))

    def token(self, text: str) -> None:
        p = self._position
        self._publish(Token(text, p.call, p.attempt, self._next_seq()))

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq - 1

    def _publish(self, event: Token | Reset) -> None:
        if self._gone:
            return
        if self._live is not None:
            self._live.send(LiveItem(self._turn_key, self._position.after, event, time.time()))
        self._queue.append(event)
        if not self._sent_first:
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
                if _turn_closed(err):
                    # Stopped (or ended) under the call: nobody reads its stream any more.
                    log.info("turn closed while its model call streamed; publishing stops")
                    self._gone = True
                    return
                log.warning("publishing turn events failed", error=str(err))

    async def _send(self) -> None:
        """Hand the queued events to the client and send them (a failed batch stays
        pending in the client and goes first next round)."""
        queued, self._queue = self._queue, []
        for event in queued:
            self._topic.publish(event)
        await self._client.flush()


def _turn_closed(err: Exception) -> bool:
    """The signal failed because the turn's workflow has closed (stopped, or ended)."""
    return isinstance(err, RPCError) and err.status == RPCStatusCode.NOT_FOUND
