"""The bench's subprocesses: `python -m bench.launch ROLE` (run from the project root).

Roles:
  worker        Parley's worker (`python worker.py`), relay tunables installed first
  gateway       Parley's gateway (`parley gateway`: uvicorn on `create_app` with
                `uvicorn_config`), relay tunables installed first
  floor-worker  a worker for the raw relay floor (`bench.relay_floor`)
  fake-model    the fake Anthropic API (tests/fake_anthropic.py) in stamp mode

Everything is configured by environment variables: Parley's own (DATABASE_URL,
TEMPORAL_ADDRESS, PARLEY_TASK_QUEUE, ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL, PARLEY_PORT, ...;
see parley/settings.py), `PARLEY_BENCH_TUNING` (bench.tuning), and for the fake model
PARLEY_BENCH_FAKE_PORT / PARLEY_BENCH_DELTAS / PARLEY_BENCH_INTERVAL,
for the floor worker
PARLEY_BENCH_FLOOR_QUEUE. SIGTERM or SIGINT stops any of them cleanly.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from datetime import timedelta

from temporalio import activity

from bench.relay_floor import PUBLISH_ACTIVITY, FloorInput
from bench.tuning import Tunables, TunedStreamClient, install_gateway, install_publisher
from parley.turn.types import EVENTS_TOPIC, TurnEvent


def run_worker() -> None:
    install_publisher(Tunables.from_env())
    import worker

    worker.main()


def run_gateway() -> None:
    install_gateway(Tunables.from_env())
    import uvicorn

    from gateway.app import create_app
    from gateway.serve import uvicorn_config
    from parley.logs import configure_logging
    from parley.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    uvicorn.Server(uvicorn_config(create_app(settings), settings)).run()


@activity.defn(name=PUBLISH_ACTIVITY)
async def publish_deltas(inp: FloorInput) -> str:
    """Publish `inp.deltas` stamped tokens, one every `inp.interval` s, like the fake model;
    return their text.

    Same publishing as Parley's model activity: the first delta flushed at once (unless
    tuned otherwise), the rest batched, drained before the activity returns. Stamps are
    kept strictly increasing (a loop running late could otherwise stamp two deltas in the
    same microsecond).
    """
    publisher = TunedStreamClient.from_within_activity(
        batch_interval=timedelta(milliseconds=inp.batch_ms)
    )
    events = publisher.topic(EVENTS_TOPIC, type=TurnEvent)
    loop = asyncio.get_running_loop()
    parts: list[str] = []
    last = 0.0
    async with publisher:
        began = loop.time()
        for i in range(inp.deltas):
            delay = began + i * inp.interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            last = max(time.time(), last + 1e-6)
            parts.append(f"<{last:.6f}>")
            events.publish(TurnEvent("token", {"text": parts[-1]}), force_flush=i == 0)
        await publisher.flush()
    return "".join(parts)


async def _serve_floor() -> None:
    from temporalio.client import Client
    from temporalio.worker import Worker

    from bench.relay_floor import RelayFloor

    TunedStreamClient.tunables = Tunables.from_env()
    client = await Client.connect(
        os.environ["TEMPORAL_ADDRESS"], namespace=os.environ.get("TEMPORAL_NAMESPACE", "default")
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    worker = Worker(
        client,
        task_queue=os.environ["PARLEY_BENCH_FLOOR_QUEUE"],
        workflows=[RelayFloor],
        activities=[publish_deltas],
        graceful_shutdown_timeout=timedelta(seconds=5),
    )
    async with worker:
        await stop.wait()


def run_fake_model() -> None:
    from parley.stack.fake_anthropic import FakeAnthropic, Reply

    fake = FakeAnthropic(port=int(os.environ["PARLEY_BENCH_FAKE_PORT"]))
    fake.default_reply = Reply(
        stamp=True,
        deltas=int(os.environ["PARLEY_BENCH_DELTAS"]),
        interval=float(os.environ["PARLEY_BENCH_INTERVAL"]),
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    fake.start()
    print(f"fake model serving on {fake.base_url}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        fake.stop()


ROLES = {
    "worker": run_worker,
    "gateway": run_gateway,
    "floor-worker": lambda: asyncio.run(_serve_floor()),
    "fake-model": run_fake_model,
}


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in ROLES:
        sys.exit(f"usage: python -m bench.launch {{{','.join(ROLES)}}}")
    ROLES[sys.argv[1]]()


if __name__ == "__main__":
    main()
