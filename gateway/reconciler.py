"""Delivering a claimed decision to its turn, and the reconciler that delivers the ones whose
gateway died between the claim and the signal.

A decision (an approval's verdict, an interaction's answer) is claimed with one guarded
UPDATE in PostgreSQL, then signalled to the turn's workflow, then marked delivered. A gateway
can die between the claim and the signal: every gateway runs a `Reconciler`, whose passes
find claims older than a grace period that were never marked delivered and signal them
again. A duplicate signal is harmless (the workflow keeps the first decision per question).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from parley.logs import get_logger
from parley.storage.db import Pool

log = get_logger(__name__)

# One kind of decision's pass: deliver what was claimed more than `grace` seconds ago and
# never marked delivered.
Pass = Callable[[Client, Pool, float], Awaitable[None]]


async def signal_turn(temporal: Client, turn_id: str, signal: Any, arg: Any) -> bool:
    """Signal a decision to its turn; False when it must be tried again later. A turn that
    is gone counts as delivered: nothing waits for the decision any more."""
    try:
        await temporal.get_workflow_handle(turn_id).signal(signal, arg)
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            log.warning("decision not delivered yet", turn=turn_id, error=err.message)
            return False
        log.warning("decision for a turn that is gone", turn=turn_id)
    return True


class Reconciler:
    """Runs each pass every `every` seconds, in every gateway."""

    def __init__(
        self,
        temporal: Client,
        pool: Pool,
        passes: Sequence[Pass],
        *,
        every: float = 2.0,
        grace: float = 2.0,
    ) -> None:
        self._temporal = temporal
        self._pool = pool
        self._passes = tuple(passes)
        self._every = every
        self._grace = grace
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="decision reconciler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            for deliver_stranded in self._passes:
                try:
                    await deliver_stranded(self._temporal, self._pool, self._grace)
                except Exception:
                    log.exception("reconciler pass failed")
            await asyncio.sleep(self._every)
