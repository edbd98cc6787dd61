"""What a turn costs Temporal: its workflow's history, counted once the workflow closed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, fields

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError

COUNTED = {
    "signals": EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED,
    "updates": EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
    "workflow_tasks": EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
    "activities": EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED,
    "timers": EventType.EVENT_TYPE_TIMER_STARTED,
}


@dataclass(frozen=True)
class TurnHistory:
    """One closed workflow's history: events of each counted kind, and all events."""

    signals: int
    updates: int
    workflow_tasks: int
    activities: int
    timers: int  # Parley: the linger after the terminal event (PARLEY_TURN_LINGER)
    events: int

    @property
    def signals_and_updates(self) -> int:
        return self.signals + self.updates


@dataclass(frozen=True)
class HistoryStats:
    """Mean and max per turn over a sample of turns."""

    turns: int
    mean: dict[str, float]
    max: dict[str, int]


METRICS = (*(f.name for f in fields(TurnHistory)), "signals_and_updates")


def stats(histories: Sequence[TurnHistory]) -> HistoryStats | None:
    if not histories:
        return None
    values = {m: [getattr(h, m) for h in histories] for m in METRICS}
    return HistoryStats(
        len(histories),
        {m: sum(v) / len(v) for m, v in values.items()},
        {m: max(v) for m, v in values.items()},
    )


async def turn_history(client: Client, workflow_id: str, timeout: float) -> TurnHistory:
    """The workflow's history once it has closed (a Parley turn lingers after its end)."""
    handle = client.get_workflow_handle(workflow_id)
    async with asyncio.timeout(timeout):
        with contextlib.suppress(WorkflowFailureError):
            await handle.result()
    history = await handle.fetch_history()
    kinds = [e.event_type for e in history.events]
    counted = {name: kinds.count(kind) for name, kind in COUNTED.items()}
    return TurnHistory(**counted, events=len(kinds))


def spread(items: Sequence[str], n: int) -> list[str]:
    """Up to `n` of `items`, evenly spread over them (early, middle and late turns)."""
    if len(items) <= n:
        return list(items)
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


async def sample_histories(
    client: Client, workflow_ids: Sequence[str], n: int, timeout: float
) -> list[TurnHistory]:
    """The histories of up to `n` of the workflows, a few fetched at a time."""
    limit = asyncio.Semaphore(4)

    async def one(workflow_id: str) -> TurnHistory:
        async with limit:
            return await turn_history(client, workflow_id, timeout)

    return list(await asyncio.gather(*(one(w) for w in spread(workflow_ids, n))))
