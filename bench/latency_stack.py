"""Turn latency, the parts under test: everything the bench brings up, each its own process.

PostgreSQL (a fresh database on DATABASE_URL's server, else on an embedded one), the
Temporal dev server, the fake model (`python -m parley.stack.fake_anthropic` in stamp
mode), Parley's worker (`python -m worker`) and gateway (`python -m parley gateway`) with
the run's relay settings, and the relay floor's worker (`python -m bench.floor_worker`).
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
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import psutil
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from bench.cpu import CpuMeter, postgres_processes, with_children
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
    """The relay settings of a run, passed to the worker and gateway as their environment."""

    batch_ms: float  # PARLEY_RELAY_BATCH_INTERVAL: the model activity's publish batches
    poll_cooldown_ms: float  # PARLEY_RELAY_POLL_COOLDOWN: the gateway subscriber's rest

    @classmethod
    def resolve(cls, batch_ms: float | None, poll_cooldown_ms: float | None) -> Relay:
        """The values given; else Parley's own, as this environment sets them."""
        settings = Settings()
        return cls(
            batch_ms if batch_ms is not None else _ms(settings.relay_batch_interval),
            poll_cooldown_ms if poll_cooldown_ms is not None else _ms(settings.relay_poll_cooldown),
        )

    def env(self) -> dict[str, str]:
        return {
            "PARLEY_RELAY_BATCH_INTERVAL": f"{self.batch_ms:g}ms",
            "PARLEY_RELAY_POLL_COOLDOWN": f"{self.poll_cooldown_ms:g}ms",
        }

    def describe(self) -> str:
        return f"batch {self.batch_ms:g} ms, poll cooldown {self.poll_cooldown_ms:g} ms"


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
    relay: Relay
    deltas: int  # the fake model's stamped deltas per reply
    interval_ms: float  # between two deltas
    log_level: str = "INFO"  # the children's PARLEY_LOG_LEVEL
    keep_logs: bool = False  # keep the children's logs even after a good run


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
        self.fake_url = self.ws_url = self.task_queue = self.floor_queue = ""

    @property
    def client(self) -> Client:
        assert self.env is not None
        return self.env.client

    async def start(self) -> None:
        say("starting PostgreSQL ...")
        server = self.databases.enter_context(databases.database_server())
        database_url = self.databases.enter_context(
            databases.fresh_database(server, "parley_bench")
        )
        self.meter.add("postgres", postgres_processes(server))

        say("starting the Temporal dev server ...")
        self.env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=temporal_binary(), dev_server_log_level="error"
        )
        address = self.client.service_client.config.target_host
        temporal = [p for p in psutil.Process().children(recursive=True) if "temporal" in p.name()]
        if not temporal:
            raise BenchError("could not find the Temporal dev server's process")
        self.meter.add("temporal", lambda: temporal)
        atexit.register(_kill_all, temporal)

        say("starting the fake model, the Parley worker and gateway, the floor worker ...")
        stamps = [
            "--stamp-deltas",
            str(self.options.deltas),
            "--stamp-interval",
            str(self.options.interval_ms / 1000),
        ]
        fake = self._spawn(
            "fake-model", ["-m", "parley.stack.fake_anthropic", *stamps], {}, capture=True
        )
        gateway_port = free_port()
        self.ws_url = f"ws://127.0.0.1:{gateway_port}/ws"
        self.task_queue = f"parley-bench-{uuid.uuid4().hex[:6]}"
        self.floor_queue = f"relay-floor-{uuid.uuid4().hex[:6]}"
        common = {
            "TEMPORAL_ADDRESS": address,
            "TEMPORAL_NAMESPACE": "default",
            "PARLEY_LOG_LEVEL": self.options.log_level,
            "PARLEY_LOG_FORMAT": "console",
        }
        line = await fake.wait_for_line("serving on", timeout=READY_TIMEOUT)
        self.fake_url = line.split()[-1]
        parley_env = {
            **common,
            **self.options.relay.env(),
            "DATABASE_URL": database_url,
            "PARLEY_TASK_QUEUE": self.task_queue,
            "ANTHROPIC_API_KEY": "bench-key",
            "ANTHROPIC_BASE_URL": self.fake_url,
            "PARLEY_HOST": "127.0.0.1",
            "PARLEY_PORT": str(gateway_port),
            "PARLEY_DATA_DIR": str(self.tmp / "data"),
            "PARLEY_TOOL_MODULES": "",
            "PARLEY_CONFIRM_TOOLS": "",
            "PARLEY_DEMO": "0",
        }
        self._spawn("worker", ["-m", "worker"], parley_env)
        self._spawn("gateway", ["-m", "parley", "gateway"], parley_env)
        floor_env = {**common, "PARLEY_BENCH_FLOOR_QUEUE": self.floor_queue}
        self._spawn("floor-worker", ["-m", "bench.floor_worker"], floor_env)

        procs = list(self.procs.values())
        for what, probe in (
            ("the Parley worker", lambda: has_pollers(self.client, self.task_queue)),
            ("the floor worker", lambda: has_pollers(self.client, self.floor_queue)),
            ("the gateway", http_ok(f"http://127.0.0.1:{gateway_port}/readyz")),
        ):
            await wait_until(probe, procs, timeout=READY_TIMEOUT, what=what)

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
        for name in ("gateway", "worker", "floor-worker", "fake-model"):
            proc = self.procs.get(name)
            if proc is not None:
                await asyncio.to_thread(proc.stop)
        if self.env is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.env.shutdown(), 20)
        try:
            await asyncio.to_thread(self.databases.close)
        except Exception as err:
            say(f"  could not drop the bench's database: {err}")
        if self.failed or self.options.keep_logs:
            say(f"logs kept in {self.log_dir}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def _kill_all(processes: list[psutil.Process]) -> None:
    for p in processes:
        with contextlib.suppress(psutil.Error):
            p.kill()
