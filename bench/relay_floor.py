"""The raw relay floor: Workflow Streams with nothing of Parley around it.

A `RelayFloor` workflow owns a `WorkflowStream`; its one activity publishes stamped
deltas into it (same count, pace and item type as a Parley turn's tokens), then the
workflow publishes a terminal `Done` carrying the published text, and returns. No gateway,
no database, no model: what a subscriber sees is the relay's own latency. This module holds
only workflow code, so the workflow sandbox can import it; the activity and its worker live
in `bench.floor_worker`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.contrib.workflow_streams import WorkflowStream

with workflow.unsafe.imports_passed_through():
    from parley.turn.events import EVENTS_TOPIC, TURN_EVENT, Done, TurnUsage

PUBLISH_ACTIVITY = "publish_deltas"


@dataclass
class FloorInput:
    deltas: int
    interval: float  # seconds between deltas
    batch_ms: float  # the publisher's batch interval (Parley's PARLEY_RELAY_BATCH_INTERVAL)


@workflow.defn(name="RelayFloor")
class RelayFloor:
    @workflow.init
    def __init__(self, inp: FloorInput) -> None:
        self.stream = WorkflowStream()
        self.events = self.stream.topic(EVENTS_TOPIC, type=TURN_EVENT)

    @workflow.run
    async def run(self, inp: FloorInput) -> None:
        text = await workflow.execute_activity(
            PUBLISH_ACTIVITY, inp, result_type=str, start_to_close_timeout=timedelta(minutes=5)
        )
        self.events.publish(Done(message_id="", text=text, usage=TurnUsage(0.0, 0, 0)))
