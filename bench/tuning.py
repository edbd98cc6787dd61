"""The relay's tunables, as the bench sets them in its worker and gateway subprocesses.

The core code fixes its relay settings (`ModelActivities(batch_interval=...)`, the model
activity's publisher, `gateway.turns.POLL_COOLDOWN`). The bench varies them without editing
the core: it passes a `Tunables` to each subprocess in one environment variable, and the
subprocess installs them before it starts serving:

- the model activity's publisher (`activities.publishing.TurnPublisher`) is replaced by a
  subclass that follows the tunables (batch interval, first-delta flush, max batch size,
  adaptive batching);
- the gateway's `POLL_COOLDOWN` is replaced;
- the floor's activity publishes through `TunedStreamClient`, the library's own
  batching client with the same tunables.

A field left `None` keeps what the core code does, and with no tunable set nothing is
replaced at all, so a bench run with no options measures Parley exactly as it ships.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any, ClassVar

from temporalio.client import Client
from temporalio.contrib.workflow_streams import WorkflowStreamClient
from temporalio.contrib.workflow_streams._client import _is_retryable_rpc_error
from temporalio.service import RPCError

ENV = "PARLEY_BENCH_TUNING"


@dataclass(frozen=True)
class Tunables:
    """Relay settings; `None` means "as the core code has it"."""

    batch_ms: float | None = None  # publisher batch interval (ModelActivities.batch_interval)
    first_flush: bool = True  # False: the first delta waits for the batch timer too
    max_batch: int | None = None  # publisher flushes as soon as this many items are buffered
    # Adaptive publisher batching: "streams:K:CAP" stretches the interval by (active
    # publishers in the process / K), "rtt:K:CAP" to K x the recent signal round trip; both
    # never below the batch interval nor above CAP milliseconds.
    adaptive: str | None = None
    poll_cooldown_ms: float | None = None  # gateway subscriber cooldown (POLL_COOLDOWN)

    @property
    def touches_publisher(self) -> bool:
        fields = (self.batch_ms, self.max_batch, self.adaptive)
        return not self.first_flush or fields != (None, None, None)

    def __post_init__(self) -> None:
        if self.adaptive:
            parse_adaptive(self.adaptive)

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> Tunables:
        raw = os.environ.get(ENV)
        return cls(**json.loads(raw)) if raw else cls()

    def resolved(self) -> Tunables:
        """These tunables with every `None` replaced by the core code's value."""
        return Tunables(
            batch_ms=self.batch_ms if self.batch_ms is not None else code_batch_ms(),
            first_flush=self.first_flush,
            max_batch=self.max_batch,
            adaptive=self.adaptive,
            poll_cooldown_ms=(
                self.poll_cooldown_ms
                if self.poll_cooldown_ms is not None
                else code_poll_cooldown_ms()
            ),
        )

    def describe(self) -> str:
        r = self.resolved()
        parts = [
            f"batch {r.batch_ms:g} ms",
            "first delta flushed at once" if r.first_flush else "first delta batched",
            f"max batch {r.max_batch}" if r.max_batch else "no max batch",
            f"adaptive {r.adaptive}" if r.adaptive else "fixed interval",
            f"poll cooldown {r.poll_cooldown_ms:g} ms",
        ]
        return ", ".join(parts)


def parse_adaptive(spec: str) -> tuple[str, float, float]:
    """("streams" | "rtt", K, cap in seconds) from "streams:8:120" / "rtt:2:150"."""
    try:
        kind, k, cap = spec.split(":")
        parsed = (kind, float(k), float(cap) / 1000)
    except ValueError:
        raise ValueError(f"adaptive batching spec {spec!r} is not KIND:K:CAP_MS") from None
    if kind not in ("streams", "rtt") or parsed[1] <= 0 or parsed[2] <= 0:
        raise ValueError(f"adaptive batching spec {spec!r}: KIND is streams or rtt, K/CAP > 0")
    return parsed


def code_batch_ms() -> float:
    """The model activity's batch interval as the core code ships it."""
    from activities.model import ModelActivities

    default = inspect.signature(ModelActivities.__init__).parameters["batch_interval"].default
    return default.total_seconds() * 1000


def code_poll_cooldown_ms() -> float:
    """The gateway subscriber's poll cooldown as the core code ships it."""
    from gateway import turns

    return turns.POLL_COOLDOWN.total_seconds() * 1000


class Load:
    """What the adaptive modes read, per process: publishers open now, and an EWMA of how
    long one publish signal takes."""

    active: ClassVar[int] = 0
    signal_rtt: ClassVar[float] = 0.0

    @classmethod
    def record_rtt(cls, seconds: float) -> None:
        cls.signal_rtt += 0.2 * (seconds - cls.signal_rtt)


def next_interval(base: float, tunables: Tunables) -> float:
    """Seconds before the next timed flush, for a publisher whose interval is `base`."""
    if not tunables.adaptive:
        return base
    kind, k, cap = parse_adaptive(tunables.adaptive)
    value = base * max(1.0, Load.active / k) if kind == "streams" else k * Load.signal_rtt
    return min(max(base, value), max(cap, base))


class TunedStreamClient(WorkflowStreamClient):
    """`WorkflowStreamClient` whose publishing follows the installed `Tunables`.

    The floor's publisher: the library's own batching (its flusher sends one batch per
    round), with the batch interval, max batch, first flush and adaptive mode tuned.
    """

    tunables: ClassVar[Tunables] = Tunables()

    @classmethod
    def create(
        cls,
        client: Client,
        workflow_id: str,
        *,
        batch_interval: timedelta = timedelta(seconds=2),
        max_batch_size: int | None = None,
        max_retry_duration: timedelta = timedelta(seconds=600),
    ) -> TunedStreamClient:
        t = cls.tunables
        if t.batch_ms is not None:
            batch_interval = timedelta(milliseconds=t.batch_ms)
        if t.max_batch is not None:
            max_batch_size = t.max_batch
        client_ = super().create(
            client,
            workflow_id,
            batch_interval=batch_interval,
            max_batch_size=max_batch_size,
            max_retry_duration=max_retry_duration,
        )
        assert isinstance(client_, TunedStreamClient)
        return client_

    async def __aenter__(self) -> TunedStreamClient:
        Load.active += 1
        await super().__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await super().__aexit__(*exc)
        finally:
            Load.active -= 1

    def _publish_to_topic(self, topic: str, value: Any, *, force_flush: bool = False) -> None:
        if not self.tunables.first_flush:
            force_flush = False
        super()._publish_to_topic(topic, value, force_flush=force_flush)

    async def _flush(self) -> None:
        sending = self._pending is not None or bool(self._buffer)
        began = time.monotonic()
        await super()._flush()
        if sending:
            Load.record_rtt(time.monotonic() - began)

    async def _run_flusher(self) -> None:
        # The library's flusher, with the wait recomputed every round (and asyncio.timeout
        # rather than wait_for, whose cancellation can be swallowed on 3.11: gh-86296).
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(
                    next_interval(self._batch_interval.total_seconds(), self.tunables)
                ):
                    await self._flush_event.wait()
            self._flush_event.clear()
            try:
                await self._flush()
            except RPCError as err:
                if not _is_retryable_rpc_error(err):
                    raise


def tuned_turn_publisher(base: Any, tunables: Tunables) -> Any:
    """A subclass of the core's `TurnPublisher` that follows `tunables`.

    It relies on the shipped publisher's shape (`_queue`, `_wake`, `_closing`,
    `_sent_first`, `_interval`, `_send`, `_run`); if that changes, this fails loudly rather
    than measuring something else.
    """
    needed = ("for_current_activity", "publish", "_run", "_send", "__aenter__", "__aexit__")
    missing = [name for name in needed if not hasattr(base, name)]
    if missing:
        raise RuntimeError(f"TurnPublisher changed shape ({missing}); update bench/tuning.py")

    class TunedTurnPublisher(base):  # type: ignore[misc, valid-type]
        @classmethod
        def for_current_activity(cls, batch_interval: timedelta) -> Any:
            if tunables.batch_ms is not None:
                batch_interval = timedelta(milliseconds=tunables.batch_ms)
            return super().for_current_activity(batch_interval)

        async def __aenter__(self) -> Any:
            Load.active += 1
            return await super().__aenter__()

        async def __aexit__(self, *exc: Any) -> None:
            try:
                await super().__aexit__(*exc)
            finally:
                Load.active -= 1

        def publish(self, event: Any, *, now: bool = False) -> None:
            if not tunables.first_flush:
                self._sent_first = True
            super().publish(event, now=now)
            if tunables.max_batch and len(self._queue) >= tunables.max_batch:
                self._wake.set()

        async def _send(self) -> None:
            sending = bool(self._queue)
            began = time.monotonic()
            await super()._send()
            if sending:
                Load.record_rtt(time.monotonic() - began)

        async def _run(self) -> None:
            while not self._closing:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(next_interval(self._interval, tunables)):
                        await self._wake.wait()
                self._wake.clear()
                try:
                    await self._send()
                except Exception as err:  # as shipped: retried next round, surfaced at exit
                    print(f"bench publisher: flush failed: {err}", flush=True)

    return TunedTurnPublisher


def install_publisher(tunables: Tunables) -> None:
    """Make the model activity publish as `tunables` say (nothing changes when none is set)."""
    import activities.model

    TunedStreamClient.tunables = tunables
    if not tunables.touches_publisher:
        return  # measure the shipped publisher itself
    shipped = getattr(activities.model, "TurnPublisher", None)
    if shipped is not None:
        activities.model.TurnPublisher = tuned_turn_publisher(shipped, tunables)  # type: ignore[attr-defined]
    else:  # an older core that used WorkflowStreamClient's own batching directly
        activities.model.WorkflowStreamClient = TunedStreamClient  # type: ignore[misc]


def install_gateway(tunables: Tunables) -> None:
    """Give the gateway's relays the tuned poll cooldown."""
    from gateway import turns

    if tunables.poll_cooldown_ms is not None:
        turns.POLL_COOLDOWN = timedelta(milliseconds=tunables.poll_cooldown_ms)
