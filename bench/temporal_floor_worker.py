"""The Temporal floor's worker: `python -m bench.temporal_floor_worker` (from the project root).

Serves `Floor`, one workflow of adjustable shape, and its no-op activity on
PARLEY_BENCH_FLOOR_QUEUE of the Temporal server at TEMPORAL_ADDRESS (namespace
TEMPORAL_NAMESPACE, default `default`) until SIGTERM or SIGINT. A `Floor` runs
`activities` no-op activities one after another, then waits until the client has sent it
`signals` signals and `updates` updates, and completes: with all three at 0 it is the
least a workflow can be (start, one workflow task, complete). Unsandboxed, like Parley's
Turn workflow, so the worker spends no more than it must.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.converter import DataConverter

from bench.floor_worker import serve_until_signalled

WORKFLOW = "Floor"
SIGNAL = "floor_signal"
UPDATE = "floor_update"


@dataclass(frozen=True)
class Shape:
    """What one `Floor` workflow does (and its client sends it)."""

    activities: int
    signals: int
    updates: int


@activity.defn(name="floor_noop")
async def noop() -> None:
    """Nothing: the activity's cost is Temporal's alone."""


@workflow.defn(name=WORKFLOW, sandboxed=False)
class Floor:
    def __init__(self) -> None:
        self.signals = 0
        self.updates = 0

    @workflow.run
    async def run(self, shape: Shape) -> None:
        for _ in range(shape.activities):
            await workflow.execute_activity(noop, start_to_close_timeout=timedelta(minutes=1))
        await workflow.wait_condition(
            lambda: self.signals >= shape.signals and self.updates >= shape.updates
        )

    @workflow.signal(name=SIGNAL)
    def signal(self) -> None:
        self.signals += 1

    @workflow.update(name=UPDATE)
    def update(self) -> int:
        self.updates += 1
        return self.updates


if __name__ == "__main__":
    asyncio.run(serve_until_signalled([Floor], [noop], DataConverter.default))
