"""Reading a turn's durable record (its workflow's stream), within the run's budget.

The stream serves two reads under one documented handler name, `__temporal_workflow_stream_poll`
(see `WorkflowStream`): an update that waits in the workflow until items arrive (prompt,
but each one is a history event, a billed action, and a run allows 2,000 of them, 10 in
flight), and a query that answers at once with what is there (no history, no per-run
limit, but it must be repeated). A feed long-polls with updates for its first
`UPDATE_BUDGET` reads, then queries every `QUERY_INTERVAL`: a turn however long finishes for
every viewer, and ten gateways watching one turn stay under the run's update limit. While
the live lane carries the tokens, the slower reads only delay the workflow's own items (tool
chunks, the end) by up to that interval. A workflow that has closed answers queries only.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from datetime import timedelta

from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.contrib.workflow_streams import PollInput, PollResult
from temporalio.service import RPCError

from parley import metrics
from parley.turn.events import EVENTS_TOPIC, TURN_EVENT, TurnEvent

STREAM_POLL = "__temporal_workflow_stream_poll"
UPDATE_BUDGET = 150  # PARLEY_RELAY_UPDATE_BUDGET; x 10 gateways = 1,500 of the 2,000
QUERY_INTERVAL = timedelta(milliseconds=250)
UPDATES = metrics.RELAY_READS.labels("update")
QUERIES = metrics.RELAY_READS.labels("query")


class RecordReader:
    def __init__(
        self,
        temporal: Client,
        turn_id: str,
        poll_cooldown: timedelta,
        update_budget: int = UPDATE_BUDGET,
    ) -> None:
        self._budget = update_budget
        self._handle = temporal.get_workflow_handle(turn_id)
        self._converter = temporal.data_converter.payload_converter
        self._poll_cooldown = poll_cooldown.total_seconds()
        self.updates = 0
        self._closed = False

    async def read(self, from_offset: int) -> AsyncIterator[tuple[int, TurnEvent]]:
        """(offset, event) from `from_offset` on, for as long as the caller iterates, or
        until the workflow has closed and every item it published has been read."""
        offset = from_offset
        while True:
            by_query = self._closed or self.updates >= self._budget
            closed_before = self._closed
            result = await (self._query(offset) if by_query else self._update(offset))
            if result is None:  # the workflow closed under the update: read by query
                continue
            for wire in result.items:
                payload = Payload.FromString(base64.b64decode(wire.data))
                yield wire.offset, self._converter.from_payload(payload, TURN_EVENT)
            offset = result.next_offset
            if result.more_ready:
                continue
            if by_query and not result.items:
                if closed_before:  # read after the close, and nothing more: the end
                    return
                if not self._closed:
                    self._closed = await self._has_closed()
                if not self._closed:
                    await asyncio.sleep(QUERY_INTERVAL.total_seconds())
            elif not by_query and self._poll_cooldown > 0:
                await asyncio.sleep(self._poll_cooldown)

    async def _update(self, offset: int) -> PollResult | None:
        self.updates += 1
        UPDATES.inc()
        poll = PollInput(topics=[EVENTS_TOPIC], from_offset=offset)
        try:
            return await self._handle.execute_update(STREAM_POLL, poll, result_type=PollResult)
        except (WorkflowUpdateFailedError, RPCError):
            if not await self._has_closed():
                raise
            self._closed = True
            return None

    async def _query(self, offset: int) -> PollResult:
        QUERIES.inc()
        poll = PollInput(topics=[EVENTS_TOPIC], from_offset=offset)
        return await self._handle.query(STREAM_POLL, poll, result_type=PollResult)

    async def _has_closed(self) -> bool:
        description = await self._handle.describe()
        return description.close_time is not None
