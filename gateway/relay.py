"""The relay: forwards one turn's stream to one connection, as protocol events.

Any gateway can relay any turn, from the start: the stream lives in the workflow,
addressed by offset.
"""

from __future__ import annotations

import asyncio

from temporalio.contrib.workflow_streams import WorkflowStreamClient

from gateway.connection import Connection
from parley import protocol
from parley.logs import get_logger
from parley.protocol import ErrorCode
from parley.turn.events import (
    EVENTS_TOPIC,
    TURN_EVENT,
    ApprovalAsked,
    ToolCallStarted,
    TurnEvent,
    is_terminal,
)

log = get_logger(__name__)

RELAY_RETRIES = 5


class Relay:
    """Forwards one turn's stream to one connection, from offset 0, until its end."""

    def __init__(
        self,
        conn: Connection,
        tid: str,
        request_id: str,
        stream: bool,
        *,
        after_approval: str | None = None,
    ) -> None:
        self.conn = conn
        self.turn_id = tid
        self.request_id = request_id
        self.stream = stream
        # Forward only what follows this approval's park (confirm + its toolCall chunk).
        self._skip_until = after_approval
        self._skip_call = False
        self.task = asyncio.create_task(self._run(), name=f"relay {tid}")

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    async def _run(self) -> None:
        try:
            await self._forward()
        finally:
            if self.conn.relays.get(self.turn_id) is self:
                del self.conn.relays[self.turn_id]

    async def _forward(self) -> None:
        offset, failures = 0, 0
        client = WorkflowStreamClient.create(self.conn.services.temporal, self.turn_id)
        while True:
            try:
                async for item in client.subscribe(
                    [EVENTS_TOPIC],
                    from_offset=offset,
                    result_type=TURN_EVENT,
                    # Polls are long-polls (they wait in the workflow for new items): the
                    # cooldown only spaces out back-to-back batches.
                    poll_cooldown=self.conn.services.settings.relay_poll_cooldown,
                ):
                    offset = item.offset + 1
                    if self._skipping(item.data):
                        continue
                    event = protocol.turn_event(self.request_id, item.data, self.stream)
                    if event is not None:
                        self.conn.outbox.send(event)
                    if is_terminal(item.data):
                        return
                return
            except asyncio.CancelledError:
                raise
            except Exception as err:
                failures += 1
                log.warning("turn stream interrupted", turn=self.turn_id, error=str(err))
                if failures > RELAY_RETRIES:
                    self.conn.outbox.send(
                        protocol.error(
                            self.request_id,
                            ErrorCode.INTERNAL_ERROR,
                            "lost the turn's event stream; re-attach with resume_turn",
                        )
                    )
                    return
                await asyncio.sleep(0.2 * 2**failures)

    def _skipping(self, event: TurnEvent) -> bool:
        if self._skip_until is not None:
            if isinstance(event, ApprovalAsked) and event.approval_id == self._skip_until:
                self._skip_until, self._skip_call = None, True
            return True
        if self._skip_call and isinstance(event, ToolCallStarted):
            self._skip_call = False
            return True
        return False


def attach_after_park(
    conn: Connection, tid: str, request_id: str, approval_id: str, *, stream: bool
) -> None:
    """Relay the rest of a parked turn (what follows the approval) to a confirming socket."""
    conn.relays[tid] = Relay(conn, tid, request_id, stream, after_approval=approval_id)


def attach(conn: Connection, tid: str, request_id: str, *, stream: bool) -> None:
    """Relay the turn to this connection from its first event (replacing an older relay)."""
    previous = conn.relays.pop(tid, None)
    if previous is not None:
        previous.task.cancel()
    conn.relays[tid] = Relay(conn, tid, request_id, stream)
