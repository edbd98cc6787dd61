"""A turn's events on one gateway: its durable record merged with the live lane, once, for
every socket that watches the turn.

Each gateway holds at most one `TurnFeed` per turn, however many sockets (tabs, devices,
a re-attached client) watch it: one reader of the durable record (`gateway.record`:
long-poll updates within a budget, then queries) and the live lane's items for that turn
(`gateway.live`). So what a turn costs in workflow updates grows with
its length in batches, not with its viewers or its tokens.

The merge is exact. `events` is the durable record, in its order: a live item is appended
only when it is the very next item of that record, which the numbering of model items
makes decidable (`parley.turn.events.Token`):
- item (call, attempt, seq) follows (call, attempt, seq - 1);
- a call's first item (attempt 1, seq 0) follows the workflow's own items published
  before the call (`after` of them) and nothing else;
- a retried attempt's first item (its reset) is never taken from the live lane: only the
  durable record knows how much of the failed attempt it holds.
Durable items already appended from the live lane are confirmed, not appended again.
Whatever the live lane loses, delays or never sends, the durable record fills in. One
exception: a live item whose worker was killed before its batch reached the record stays
with the clients that saw it; the retry's reset, next in the record, discards it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

from temporalio.client import Client

from gateway.record import UPDATE_BUDGET, RecordReader
from parley import metrics
from parley.logs import get_logger, new_reference
from parley.protocol import ErrorCode
from parley.storage.live import LiveItem, turn_key
from parley.turn.events import (
    Failed,
    Reset,
    Token,
    TurnEvent,
    from_model_call,
    is_terminal,
)

log = get_logger(__name__)

DURABLE_RETRIES = 5
MAX_PENDING_LIVE = 5_000  # live items held while waiting for the durable record to catch up

Key = tuple[int, int, int]


class FeedLost(Exception):
    """The turn's durable record could not be read (after retries)."""


def _key(event: Token | Reset) -> Key:
    return (event.call, event.attempt, event.seq)


def _same_item(a: TurnEvent, b: TurnEvent) -> bool:
    """Whether two model items are the same one (workflow items never come live)."""
    return from_model_call(a) and from_model_call(b) and _key(a) == _key(b)


@dataclass
class FeedCounts:
    """Where a gateway's relayed items came from (which lane got there first)."""

    live: int = 0
    durable: int = 0


class TurnFeed:
    def __init__(
        self,
        turn_id: str,
        reader: RecordReader,
        counts: FeedCounts,
        first_read_delay: float = 0.0,
    ) -> None:
        self.turn_id = turn_id
        self.events: list[TurnEvent] = []
        self.done = False
        self.lost = False
        self._reader = reader
        self._counts = counts
        self._first_read_delay = first_read_delay
        self._workflow_items = 0  # items in `events` the workflow published itself
        self._durable_next = 0  # the next offset to read from the durable record
        self._confirmed = 0  # items of `events` the durable record has confirmed (or passed)
        self._pending: dict[Key, LiveItem] = {}
        self._delivered: set[Key] = set()  # model items already in `events`
        self._changed = asyncio.Event()
        self.watchers = 0
        self._task = asyncio.create_task(self._read_durable(), name="turn feed")

    def stop(self) -> None:
        """Stop reading the durable record (watchers still see what was had)."""
        self._task.cancel()

    async def close(self) -> None:
        self.stop()
        await asyncio.gather(self._task, return_exceptions=True)

    async def follow(self, start: int = 0) -> AsyncIterator[TurnEvent]:
        """The turn's events from index `start`, as they come, up to the terminal one.

        Raises FeedLost when the durable record is lost before the turn's end."""
        self.watchers += 1
        try:
            index = start
            while True:
                changed = self._changed
                while index < len(self.events):
                    yield self.events[index]
                    index += 1
                if self.done:
                    return
                if self.lost:
                    raise FeedLost(self.turn_id)
                await changed.wait()
        finally:
            self.watchers -= 1

    def offer_live(self, item: LiveItem) -> None:
        """Take a live item (dropped when already had, or when too much is waiting)."""
        if self.done or _key(item.event) in self._delivered:
            return
        if len(self._pending) < MAX_PENDING_LIVE:
            self._pending[_key(item.event)] = item
        self._take_live()

    def _append(self, event: TurnEvent) -> None:
        self.events.append(event)
        if from_model_call(event):
            key = _key(event)
            self._delivered.add(key)
            self._pending.pop(key, None)
        else:
            self._workflow_items += 1
        if is_terminal(event):
            self.done = True
            self._pending.clear()
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _take_live(self) -> None:
        """Append pending live items for as long as one is the record's next item."""
        while (item := self._next_live()) is not None:
            self._counts.live += 1
            metrics.RELAY_ITEMS_LIVE.inc()
            if item.sent_at:
                metrics.DELTA_LAG.observe(max(0.0, time.time() - item.sent_at))
            self._append(item.event)

    def _next_live(self) -> LiveItem | None:
        last = self.events[-1] if self.events else None
        if last is not None and from_model_call(last):
            return self._pending.pop((last.call, last.attempt, last.seq + 1), None)
        for key, item in self._pending.items():
            _, attempt, seq = key
            if attempt == 1 and seq == 0 and item.after == self._workflow_items:
                return self._pending.pop(key)
        return None

    def _on_durable(self, offset: int, event: TurnEvent) -> None:
        """Confirm the next live-taken item with the record's next item, or append it.

        A live item the record never gets (its worker died before the batch went out) is
        passed over: the retried attempt's reset, which follows, tells clients to drop it.
        """
        self._durable_next = offset + 1
        while self._confirmed < len(self.events):
            had = self.events[self._confirmed]
            self._confirmed += 1
            if _same_item(had, event):
                return
        self._counts.durable += 1
        if from_model_call(event):
            metrics.RELAY_ITEMS_DURABLE.inc()
        self._confirmed += 1
        self._append(event)
        self._take_live()

    async def _read_durable(self) -> None:
        failures = 0
        try:
            if self._first_read_delay > 0:
                await asyncio.sleep(self._first_read_delay)
            while not self.done:
                try:
                    async for offset, event in self._reader.read(self._durable_next):
                        self._on_durable(offset, event)
                        if self.done:
                            return
                    self._ended_unfinished()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as err:
                    # The SDK turns a cancel during an update into its own error: that is a
                    # stop (the gateway shutting down, the feed dropped), never a retry.
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise asyncio.CancelledError from err
                    failures += 1
                    log.warning("turn stream interrupted", turn_id=self.turn_id, error=str(err))
                    if failures > DURABLE_RETRIES:
                        self.lost = True
                        self._wake()
                        return
                    await asyncio.sleep(0.2 * 2**failures)
        finally:
            if not self.done and not self.lost:
                self.lost = True
                self._wake()

    def _ended_unfinished(self) -> None:
        """The workflow closed without a terminal item (terminated, timed out): its
        watchers still get exactly one end, an error with a reference to this log line."""
        ref = new_reference()
        log.warning("turn ended without a terminal event", turn_id=self.turn_id, ref=ref)
        self._append(
            Failed(ErrorCode.AGENT_ERROR, f"the agent could not complete this turn (ref {ref})")
        )


class Feeds:
    """The turn feeds of this gateway, by turn id and by live-lane key."""

    def __init__(
        self,
        temporal: Client,
        poll_cooldown: timedelta,
        linger: timedelta,
        update_budget: int = UPDATE_BUDGET,
        first_read_delay: timedelta = timedelta(0),
    ) -> None:
        self._temporal = temporal
        self._update_budget = update_budget
        self._first_read_delay = first_read_delay.total_seconds()
        self._poll_cooldown = poll_cooldown
        self._linger = linger.total_seconds()
        self._by_turn: dict[str, TurnFeed] = {}
        self._by_key: dict[str, TurnFeed] = {}
        self.counts = FeedCounts()

    def __len__(self) -> int:
        return len(self._by_turn)

    def get(self, turn_id: str, *, just_started: bool = False) -> TurnFeed:
        """The turn's feed, started if this gateway has none (or only a lost one).

        A turn this gateway has `just_started` has nothing in its record until its first
        batch: its first read waits `first_read_delay`, so that read (an update, a workflow
        task in the worker) does not compete with the model call for the first token."""
        feed = self._by_turn.get(turn_id)
        if feed is None or feed.lost:
            reader = RecordReader(self._temporal, turn_id, self._poll_cooldown, self._update_budget)
            delay = self._first_read_delay if just_started else 0.0
            feed = TurnFeed(turn_id, reader, self.counts, delay)
            if turn_id not in self._by_turn:
                metrics.RELAY_FEEDS.inc()
            self._by_turn[turn_id] = feed
            self._by_key[turn_key(turn_id)] = feed
        return feed

    def offer(self, item: LiveItem) -> None:
        feed = self._by_key.get(item.turn)
        if feed is not None:
            feed.offer_live(item)

    def release(self, feed: TurnFeed) -> None:
        """A watcher left: a feed nobody watches stops after the linger, so a reload or a
        reconnect is served from memory. Not at once: a dropped feed's long-poll stays in
        flight in the workflow until the stream's next item, and a run allows 10 at once."""
        if feed.watchers > 0 or self._by_turn.get(feed.turn_id) is not feed:
            return
        asyncio.get_running_loop().call_later(self._linger, self._drop_if_idle, feed)

    def _drop_if_idle(self, feed: TurnFeed) -> None:
        if feed.watchers == 0 and self._by_turn.get(feed.turn_id) is feed:
            self._drop(feed)

    def _drop(self, feed: TurnFeed) -> None:
        del self._by_turn[feed.turn_id]
        metrics.RELAY_FEEDS.dec()
        self._by_key.pop(turn_key(feed.turn_id), None)
        feed.stop()

    async def aclose(self) -> None:
        feeds = list(self._by_turn.values())
        metrics.RELAY_FEEDS.dec(len(feeds))
        self._by_turn.clear()
        self._by_key.clear()
        await asyncio.gather(*(f.close() for f in feeds))
