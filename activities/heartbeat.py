"""Heartbeating while an activity works, so a lost worker or a cancel is noticed in seconds."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from temporalio import activity

HEARTBEAT_EVERY = 1.0


@contextlib.asynccontextmanager
async def heartbeating(every: float = HEARTBEAT_EVERY) -> AsyncIterator[None]:
    """Heartbeat in the background for the duration of the block.

    A cancel reaches an activity only through a heartbeat's response, and a worker that
    dies stops heartbeating: with a short heartbeat timeout both are noticed quickly even
    while the activity waits on something slow (the model's first byte, a tool's API).
    """

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(every)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
