"""The relay: forwards one turn's events to one connection, as protocol events.

Any gateway can relay any turn, from the start: the sockets of a gateway that watch the
same turn share its feed (`gateway.feed`).
"""

from __future__ import annotations

import asyncio
import time

from gateway.connection import Connection
from gateway.feed import FeedLost
from parley import metrics, protocol
from parley.logs import get_logger
from parley.protocol import ErrorCode
from parley.turn.events import ApprovalAsked, InteractionAsked, Token, ToolCallStarted, TurnEvent

log = get_logger(__name__)


class Relay:
    """Forwards one turn's feed to one connection, from its first event, until its end."""

    def __init__(
        self,
        conn: Connection,
        tid: str,
        request_id: str,
        stream: bool,
        *,
        after_park: str | None = None,
        accepted_at: float | None = None,
    ) -> None:
        self.conn = conn
        self.turn_id = tid
        self.request_id = request_id
        self.stream = stream
        # Forward only what follows this park (its question and its toolCall chunk): an
        # approval's or an interaction's id.
        self._skip_until = after_park
        self._skip_call = False
        # When this gateway took the turn's send_message (time.monotonic()): its first
        # token is then timed (parley_time_to_first_token_seconds).
        self._accepted_at = accepted_at
        self.task = asyncio.create_task(self._run(), name="relay")

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    async def _run(self) -> None:
        feeds = self.conn.services.feeds
        feed = feeds.get(self.turn_id)
        metrics.RELAY_SOCKETS.inc()
        try:
            async for event in feed.follow():
                if self._skipping(event):
                    continue
                rendered = protocol.turn_event(self.request_id, event, self.stream)
                if rendered is not None:
                    if self._accepted_at is not None and isinstance(event, Token):
                        metrics.TIME_TO_FIRST_TOKEN.observe(time.monotonic() - self._accepted_at)
                        self._accepted_at = None
                    self.conn.outbox.send(rendered)
        except FeedLost:
            self.conn.outbox.send(
                protocol.error(
                    self.request_id,
                    ErrorCode.INTERNAL_ERROR,
                    "lost the turn's event stream; re-attach with resume_turn",
                )
            )
        finally:
            metrics.RELAY_SOCKETS.dec()
            feeds.release(feed)
            if self.conn.relays.get(self.turn_id) is self:
                del self.conn.relays[self.turn_id]

    def _skipping(self, event: TurnEvent) -> bool:
        if self._skip_until is not None:
            if _park_id(event) == self._skip_until:
                self._skip_until, self._skip_call = None, True
            return True
        if self._skip_call and isinstance(event, ToolCallStarted):
            self._skip_call = False
            return True
        return False


def _park_id(event: TurnEvent) -> str | None:
    """The id of the question `event` parks the turn on, if it does."""
    if isinstance(event, ApprovalAsked):
        return event.approval_id
    if isinstance(event, InteractionAsked):
        return event.interaction_id
    return None


def attach_after_park(
    conn: Connection, tid: str, request_id: str, park_id: str, *, stream: bool
) -> None:
    """Relay the rest of a parked turn (what follows the question `park_id`, an approval's or
    an interaction's) to a socket that answered it."""
    conn.relays[tid] = Relay(conn, tid, request_id, stream, after_park=park_id)


def attach(
    conn: Connection,
    tid: str,
    request_id: str,
    *,
    stream: bool,
    just_started: bool = False,
    accepted_at: float | None = None,
) -> None:
    """Relay the turn to this connection from its first event. A connection that already
    relays it keeps that relay (a retried send_message, a resume_turn: restarting would
    repeat what the client has); one that ended is replaced, replaying the turn.

    `just_started`: this gateway has just started the turn's workflow, so its record is
    empty for a while (see `Feeds.get`); `accepted_at`: when its send_message arrived
    (`time.monotonic()`), to time its first token."""
    previous = conn.relays.get(tid)
    if previous is not None and not previous.task.done():
        return
    conn.services.feeds.get(tid, just_started=just_started)
    conn.relays[tid] = Relay(
        conn, tid, request_id, stream, accepted_at=accepted_at if just_started else None
    )
