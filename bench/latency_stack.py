"""Turn latency, the parts under test: everything the bench brings up, each its own process.

PostgreSQL (two fresh databases on DATABASE_URL's server, else on an embedded one), the
Temporal dev server, the fake model (`python -m parley.stack.fake_anthropic` in stamp
mode), Parley twice: a worker (`python -m worker`) and a gateway (`python -m
bench.counting_gateway`: `parley gateway` plus a read-only count of which lane delivered
what) with the live lane on, and another pair with it off, each pair on its own database
and task queue with its own relay settings; the relay floor's worker (`python -m
bench.floor_worker`) and the live-lane floor's sender (`python -m bench.live_floor`).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import psutil
from psycopg import conninfo
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from bench.counting_gateway import COUNTS_PATH
from bench.cpu import CpuMeter, postgres_processes, with_children
from bench.floor_worker import bench_data_converter
from parley.settings import Settings
from parley.stack import databases
from parley.stack.embedded import temporal_binary
from parley.stack.processes import ChildProcess, free_port, http_ok, wait_until

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 60.0


class BenchError(RuntimeError):
    """The bench cannot go on (a part failed to start, or died)."""


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Relay:
    """How one Parley pair relays a turn, passed to its worker and gateway as environment."""

    live: bool  # PARLEY_LIVE_LANE: tokens by LISTEN/NOTIFY at once, besides the record
    batch_ms: float  # PARLEY_RELAY_BATCH_INTERVAL: the model activity's publish batches
    poll_cooldown_ms: float  # PARLEY_RELAY_POLL_COOLDOWN: the gateway subscriber's rest
    linger_s: float  # PARLEY_TURN_LINGER: a finished turn's workflow stays open this long

    @classmethod
    def resolve(
        cls,
        live: bool,
        batch_ms: float | None,
        poll_cooldown_ms: float | None,
        linger_s: float,
    ) -> Relay:
        """The values given; else Parley's own, as this environment sets them."""
        settings = Settings()
        return cls(
            live,
            batch_ms if batch_ms is not None else _ms(settings.relay_batch_interval),
            poll_cooldown_ms if poll_cooldown_ms is not None else _ms(settings.relay_poll_cooldown),
            linger_s,
        )

    def env(self) -> dict[str, str]:
        return {
            "PARLEY_LIVE_LANE": "true" if self.live else "false",
            "PARLEY_RELAY_BATCH_INTERVAL": f"{self.batch_ms:g}ms",
            "PARLEY_RELAY_POLL_COOLDOWN": f"{self.poll_cooldown_ms:g}ms",
            "PARLEY_TURN_LINGER": f"{self.linger_s:g}s",
        }

    def describe(self) -> str:
        return (
            f"live lane {'on' if self.live else 'off'}, batch {self.batch_ms:g} ms, "
            f"poll cooldown {self.poll_cooldown_ms:g} ms, linger {self.linger_s:g} s"
        )


# The bench is one address playing many visitors at a pace no visitor keeps: the per-address
# and per-session limits are raised out of its way (their checks still run on every turn).
BENCH_LIMITS = {
    "PARLEY_WS_CONNECTIONS_PER_IP": "100000",
    "PARLEY_SESSIONS_PER_IP_PER_MINUTE": "1000000",
    "PARLEY_TURNS_PER_SESSION_PER_MINUTE": "1000000",
    "PARLEY_TURNS_PER_IP_PER_MINUTE": "1000000",
}


def _ms(value: timedelta) -> float:
    return value.total_seconds() * 1000


def python_env(extra: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def has_pollers(client: Client, task_queue: str) -> bool:
    for kind in (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY):
        resp = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=task_queue),
                task_queue_type=kind,
            )
        )
        if not resp.pollers:
            return False
    return True


@dataclass(frozen=True)
class StackOptions:
    live: Relay  # Parley as shipped: the live lane on
    off: Relay  # Parley with the live lane off: the durable relay alone
    deltas: int  # the fake model's stamped deltas per reply
    interval_ms: float  # between two deltas
    log_level: str = "INFO"  # the children's PARLEY_LOG_LEVEL
    keep_logs: bool = False  # keep the children's logs even after a good run


@dataclass(frozen=True)
class ParleyEndpoint:
    """One running Parley pair (worker + gateway), as its clients reach it."""

    relay: Relay
    ws_url: str
    counts_url: str  # the gateway's GET /bench/feed-counts
    task_queue: str


# The CPU groups of each pair's processes (the meter's names), and of the floors'.
PARLEY_PROCESSES = {"parley": ("worker", "gateway"), "parley-off": ("worker-off", "gateway-off")}


class Stack:
    """Everything the bench brings up, torn down in reverse order whatever happens."""

    def __init__(self, options: StackOptions) -> None:
        self.options = options
        self.tmp = Path(tempfile.mkdtemp(prefix="parley-bench-"))
        self.log_dir = self.tmp / "logs"
        self.log_dir.mkdir()
        self.procs: dict[str, ChildProcess] = {}
        self.meter = CpuMeter()
        self.meter.add("bench", lambda: [psutil.Process()])
        self.env: WorkflowEnvironment | None = None
        self.databases = contextlib.ExitStack()
        self.failed = False
        self.fake_url = self.floor_queue = self.live_floor_url = ""
        self.parley: dict[str, ParleyEndpoint] = {}

    @property
    def client(self) -> Client:
        assert self.env is not None
        return self.env.client

    async def start(self) -> None:
        say("starting PostgreSQL ...")
        server = self.databases.enter_context(databases.database_server())
        urls = {
            name: self.databases.enter_context(databases.fresh_database(server, prefix))
            for name, prefix in (("parley", "parley_bench"), ("parley-off", "parley_bench_off"))
        }
        ours = [conninfo.conninfo_to_dict(url)["dbname"] for url in urls.values()]
        self.meter.add("postgres", postgres_processes(server, [str(n) for n in ours]))
        self.live_floor_url = urls["parley"]  # its own channels: Parley's gateway ignores them

        say("starting the Temporal dev server ...")
        self.env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=temporal_binary(),
            dev_server_log_level="error",
            data_converter=bench_data_converter(),
        )
        address = self.client.service_client.config.target_host
        temporal = [p for p in psutil.Process().children(recursive=True) if "temporal" in p.name()]
        if not temporal:
            raise BenchError("could not find the Temporal dev server's process")
        self.meter.add("temporal", lambda: temporal)
        atexit.register(_kill_all, temporal)

        say("starting the fake model, two Parley workers and gateways, the floors ...")
        stamps = [
            "--stamp-deltas",
            str(self.options.deltas),
            "--stamp-interval",
            str(self.options.interval_ms / 1000),
        ]
        fake = self._spawn(
            "fake-model", ["-m", "parley.stack.fake_anthropic", *stamps], {}, capture=True
        )
        common = {
            "TEMPORAL_ADDRESS": address,
            "TEMPORAL_NAMESPACE": "default",
            "PARLEY_LOG_LEVEL": self.options.log_level,
            "PARLEY_LOG_FORMAT": "console",
            "PARLEY_WIDGET_AUTH_STRICT": "false",
        }
        line = await fake.wait_for_line("serving on", timeout=READY_TIMEOUT)
        self.fake_url = line.split()[-1]
        probes: list[tuple[str, Callable[[], Awaitable[bool]]]] = []
        for name, relay in (("parley", self.options.live), ("parley-off", self.options.off)):
            endpoint = self._spawn_parley(name, relay, urls[name], common)
            self.parley[name] = endpoint
            probes.append((f"the {name} worker", _pollers(self.client, endpoint.task_queue)))
            probes.append((f"the {name} gateway", http_ok(_ready_url(endpoint))))
        self.floor_queue = f"relay-floor-{uuid.uuid4().hex[:6]}"
        floor_env = {**common, "PARLEY_BENCH_FLOOR_QUEUE": self.floor_queue}
        self._spawn("floor-worker", ["-m", "bench.floor_worker"], floor_env)
        probes.append(("the floor worker", _pollers(self.client, self.floor_queue)))
        live_floor = self._spawn(
            "live-floor",
            ["-m", "bench.live_floor", "--deltas", stamps[1], "--interval", stamps[3]],
            {"DATABASE_URL": self.live_floor_url},
            capture=True,
        )

        procs = list(self.procs.values())
        for what, probe in probes:
            await wait_until(probe, procs, timeout=READY_TIMEOUT, what=what)
        await live_floor.wait_for_line("live floor listening", timeout=READY_TIMEOUT)

    def _spawn_parley(
        self, name: str, relay: Relay, database_url: str, common: dict[str, str]
    ) -> ParleyEndpoint:
        port = free_port()
        task_queue = f"{name}-bench-{uuid.uuid4().hex[:6]}"
        env = {
            **common,
            **relay.env(),
            **BENCH_LIMITS,
            "DATABASE_URL": database_url,
            "PARLEY_TASK_QUEUE": task_queue,
            "ANTHROPIC_API_KEY": "bench-key",
            "ANTHROPIC_BASE_URL": self.fake_url,
            "PARLEY_HOST": "127.0.0.1",
            "PARLEY_PORT": str(port),
            "PARLEY_DATA_DIR": str(self.tmp / f"data-{name}"),
            "PARLEY_TOOL_MODULES": "",
            "PARLEY_CONFIRM_TOOLS": "",
            "PARLEY_DEMO": "0",
        }
        worker, gateway = PARLEY_PROCESSES[name]
        self._spawn(worker, ["-m", "worker"], env)
        self._spawn(gateway, ["-m", "bench.counting_gateway"], env)
        base = f"127.0.0.1:{port}"
        return ParleyEndpoint(relay, f"ws://{base}/ws", f"http://{base}{COUNTS_PATH}", task_queue)

    def _spawn(
        self, name: str, args: list[str], extra: dict[str, str], *, capture: bool = False
    ) -> ChildProcess:
        proc = ChildProcess(
            name,
            [sys.executable, *args],
            env=python_env(extra),
            cwd=ROOT,
            log_path=None if capture else self.log_dir / f"{name}.log",
            capture=capture,
            new_session=True,  # Ctrl-C reaches the bench only; it stops us in order
        )
        self.procs[name] = proc
        self.meter.add(name, with_children(psutil.Process(proc.pid)))
        return proc

    def check(self) -> None:
        for proc in self.procs.values():
            proc.check()

    async def stop(self) -> None:
        say("shutting down ...")
        for name in (
            "gateway",
            "gateway-off",
            "worker",
            "worker-off",
            "floor-worker",
            "live-floor",
            "fake-model",
        ):
            proc = self.procs.get(name)
            if proc is not None:
                await asyncio.to_thread(proc.stop)
        if self.env is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.env.shutdown(), 20)
        try:
            await asyncio.to_thread(self.databases.close)
        except Exception as err:
            say(f"  could not drop the bench's databases: {err}")
        if self.failed or self.options.keep_logs:
            say(f"logs kept in {self.log_dir}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def _pollers(client: Client, task_queue: str) -> Callable[[], Awaitable[bool]]:
    return lambda: has_pollers(client, task_queue)


def _ready_url(endpoint: ParleyEndpoint) -> str:
    return endpoint.counts_url.replace(COUNTS_PATH, "/readyz")


def _kill_all(processes: list[psutil.Process]) -> None:
    for p in processes:
        with contextlib.suppress(psutil.Error):
            p.kill()
