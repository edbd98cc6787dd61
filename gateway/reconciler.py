"""Delivering a claimed decision to its turn, and the reconciler that delivers the ones whose
gateway died between the claim and the signal.

A decision (an approval's verdict, an interaction's answer) is claimed with one guarded
UPDATE in PostgreSQL, then signalled to the turn's workflow, then marked delivered
(`Decisions.deliver`). A gateway can die between the claim and the signal: every gateway
runs a `Reconciler`, which finds claims older than a grace period that were never marked
delivered and signals them again. A duplicate signal is harmless (the workflow keeps the
first decision per question).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from parley.logs import get_logger
from parley.storage.db import Conn, Pool

log = get_logger(__name__)

C = TypeVar("C")  # a claimed decision, as its storage module returns it


@dataclass(frozen=True)
class Decisions(Generic[C]):
    """One kind of claimed decision, and how it reaches its turn."""

    name: str  # for log lines
    signal: Callable[[C], tuple[str, Any, Any]]  # (turn id, workflow signal, its argument)
    mark_delivered: Callable[[Conn, C], Awaitable[None]]
    undelivered: Callable[[Conn, float], Awaitable[Sequence[C]]]  # claimed that long ago

    async def deliver(self, temporal: Client, pool: Pool, claimed: C) -> bool:
        """Signal the decision to its turn and record the delivery; False when it must wait."""
        if not await signal_turn(temporal, *self.signal(claimed)):
            return False
        async with pool.connection() as db:
            await self.mark_delivered(db, claimed)
        return True

    async def deliver_stranded(self, temporal: Client, pool: Pool, grace: float) -> None:
        """Deliver those claimed more than `grace` seconds ago and never marked delivered."""
        async with pool.connection() as db:
            stranded = await self.undelivered(db, grace)
        for claimed in stranded:  # signalled without holding a connection
            log.info("delivering a stranded decision", kind=self.name)
            await self.deliver(temporal, pool, claimed)


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
    """Delivers each kind's stranded decisions every `every` seconds, in every gateway."""

    def __init__(
        self,
        temporal: Client,
        pool: Pool,
        kinds: Sequence[Decisions[Any]],
        *,
        every: float = 2.0,
        grace: float = 2.0,
    ) -> None:
        self._temporal = temporal
        self._pool = pool
        self._kinds = tuple(kinds)
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
            for kind in self._kinds:
                try:
                    await kind.deliver_stranded(self._temporal, self._pool, self._grace)
                except Exception:
                    log.exception("reconciler pass failed", kind=kind.name)
            await asyncio.sleep(self._every)
