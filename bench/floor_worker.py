"""The relay floor's worker: `python -m bench.floor_worker` (run from the project root).

Serves `bench.relay_floor.RelayFloor` and its activity on PARLEY_BENCH_FLOOR_QUEUE of the
Temporal server at TEMPORAL_ADDRESS (namespace TEMPORAL_NAMESPACE, default `default`)
until SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.contrib.workflow_streams import WorkflowStreamClient
from temporalio.converter import DataConverter
from temporalio.worker import Worker

from bench.relay_floor import PUBLISH_ACTIVITY, FloorInput, RelayFloor
from parley import temporal_client
from parley.settings import Settings
from parley.turn.events import EVENTS_TOPIC, TURN_EVENT, Token


@activity.defn(name=PUBLISH_ACTIVITY)
async def publish_deltas(inp: FloorInput) -> str:
    """Publish `inp.deltas` stamped tokens, one every `inp.interval` s, like the fake model;
    return their text.

    Publishing is the library's own, through its public API: the first delta is flushed at
    once, the rest every `inp.batch_ms` by `flush()`, and all are flushed before the
    activity returns. (Not the client's context manager: on Python 3.11 its exit can hang
    when the cancel meets its batch timer, gh-86296.) Stamps are kept strictly increasing
    (a loop running late could otherwise stamp two deltas in the same microsecond).
    """
    publisher = WorkflowStreamClient.from_within_activity()
    events = publisher.topic(EVENTS_TOPIC, type=TURN_EVENT)
    batch = inp.batch_ms / 1000
    first, done = asyncio.Event(), asyncio.Event()

    async def flush_rounds() -> None:
        await first.wait()
        while not done.is_set():
            await publisher.flush()
            try:
                async with asyncio.timeout(batch):
                    await done.wait()
            except TimeoutError:
                pass

    flusher = asyncio.create_task(flush_rounds())
    loop = asyncio.get_running_loop()
    parts: list[str] = []
    last = 0.0
    try:
        began = loop.time()
        for i in range(inp.deltas):
            delay = began + i * inp.interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            last = max(time.time(), last + 1e-6)
            parts.append(f"<{last:.6f}>")
            events.publish(Token(parts[-1], call=0, attempt=1, seq=i))
            first.set()
    finally:
        first.set()
        done.set()
        await flusher
    await publisher.flush()
    return "".join(parts)


def bench_data_converter() -> DataConverter:
    """The converter of the bench's own clients (its driver's, the floor worker's): with
    PARLEY_PAYLOAD_KEYS set (the Parley processes inherit it), Parley's encrypting one, so
    they read the same payloads; unset, the library's default, as the floor always had."""
    keys = Settings().payload_keys
    return DataConverter.default if keys is None else temporal_client.data_converter(keys)


async def serve_until_signalled(
    workflows: list[type], activities: list[Any], data_converter: DataConverter
) -> None:
    """A worker on PARLEY_BENCH_FLOOR_QUEUE of TEMPORAL_ADDRESS until SIGTERM or SIGINT."""
    client = await Client.connect(
        os.environ["TEMPORAL_ADDRESS"],
        namespace=os.environ.get("TEMPORAL_NAMESPACE", "default"),
        data_converter=data_converter,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    worker = Worker(
        client,
        task_queue=os.environ["PARLEY_BENCH_FLOOR_QUEUE"],
        workflows=workflows,
        activities=activities,
        graceful_shutdown_timeout=timedelta(seconds=5),
    )
    async with worker:
        await stop.wait()


if __name__ == "__main__":
    # The bench client's converter: it starts these workflows.
    asyncio.run(serve_until_signalled([RelayFloor], [publish_deltas], bench_data_converter()))
