"""Turn latency: Parley with its live lane, and without, against the raw floors of both lanes.

Run by hand from the project root (it is not a test):

    .venv/bin/python bench/turn_latency.py [--sessions 1,10,50] [--turns 8] ...

It brings up real parts (`bench.latency_stack`), each its own process: PostgreSQL
(DATABASE_URL's server, else an embedded one; fresh databases either way), the Temporal dev
server, the fake Anthropic API in stamp mode (each text delta carries its send time,
`--deltas` deltas every `--interval-ms`), two Parley pairs (worker + gateway: the live lane
on with Parley's relay settings, and off with short batches), the relay floor's worker and
the live floor's sender. Clients run in this process (`bench.latency_driver`). Per
concurrency level it runs one phase per system:

  sdk          the fake model through the bare anthropic SDK: its own time to first token
  relay-floor  a minimal workflow owning a WorkflowStream, whose activity publishes the same
               deltas through WorkflowStreamClient.from_within_activity to a subscriber (no
               gateway, database or model): the durable relay's own floor
  live-floor   one process NOTIFYs the same stamped deltas on a channel, this one LISTENs
               (`bench.live_floor`): the live lane's own floor
  parley       real turns over the WebSocket protocol, the live lane on (as shipped)
  parley-off   the same with PARLEY_LIVE_LANE=false: the durable relay alone

and prints (`bench.latency_report`), per level, every system side by side: time to first
token (Parley's also minus the bare SDK's, percentile by percentile), per-delta latency
(receive time minus the stamp in the token), turns per second, CPU seconds per turn by
process, which lane delivered Parley's items (read from the bench's gateway,
`bench.counting_gateway`), Temporal signals + updates and history events per turn (the
histories of a sample of finished turns, `bench.temporal_counts`), lost / duplicated /
reordered deltas, and ratios against the baselines; then the Temporal counts, a Markdown
summary and the targets, PASS or FAIL (`bench.latency_targets`).
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
import math
import signal
from datetime import timedelta

import anthropic
import psutil

from bench.cpu import CpuMeter
from bench.latency_diagnose import print_latency_split, print_timeline
from bench.latency_driver import (
    Driver,
    FloorDriver,
    LiveFloorDriver,
    ParleyDriver,
    PhaseResult,
    SdkDriver,
    run_phase,
)
from bench.latency_report import (
    CORES,
    OTHER_CPU_WARN,
    LevelReport,
    print_idle,
    print_level,
    print_summary,
    print_temporal,
)
from bench.latency_stack import BenchError, Relay, Stack, StackOptions, say
from bench.latency_targets import print_targets
from bench.live_floor import LiveFloorListener
from bench.relay_floor import FloorInput
from bench.temporal_counts import sample_histories
from parley.stack.processes import ChildExited

PHASES = ("sdk", "relay-floor", "live-floor", "parley", "parley-off")
FLOORS = ("relay-floor", "live-floor")
WITH_HISTORY = ("parley", "parley-off", "relay-floor")
DURABLE_TOKENS = ("parley-off", "relay-floor")  # tokens reach clients through the signals


def turns_for(sessions: int, turns: int, min_samples: int) -> int:
    """Turns per session: at least `turns`, and enough for `min_samples` TTFT samples."""
    return max(turns, math.ceil(min_samples / sessions))


async def bench(args: argparse.Namespace) -> bool:
    live = Relay.resolve(True, args.batch_ms, args.poll_cooldown_ms, args.linger_s)
    off = Relay(False, args.off_batch_ms, args.off_poll_cooldown_ms, args.linger_s)
    floor_cooldown_ms = (
        args.floor_poll_cooldown_ms
        if args.floor_poll_cooldown_ms is not None
        else off.poll_cooldown_ms
    )
    phases = [p for p in PHASES if p in args.phases]
    print(
        f"Parley turn latency: live lane on and off, against the floors of both lanes\n"
        f"  {args.deltas} stamped deltas per turn, one every {args.interval_ms:g} ms; "
        f"sessions {args.sessions}, {args.think_ms:g} ms between a session's turns; "
        f"{CORES} CPU cores\n"
        f"  Parley:        {live.describe()}\n"
        f"  live lane off: {off.describe()}\n"
        f"  relay floor:   batch {off.batch_ms:g} ms, subscriber poll cooldown "
        f"{floor_cooldown_ms:g} ms; library defaults otherwise\n"
        f"  live floor:    one connection NOTIFYing whatever has queued, one LISTENing",
        flush=True,
    )
    idle = await asyncio.to_thread(psutil.cpu_percent, 1.0)
    if idle > OTHER_CPU_WARN * 100 / CORES:
        say(
            f"WARNING: the machine is already {idle:.0f}% busy before the bench starts; "
            "other processes will skew the numbers"
        )
    stack = Stack(
        StackOptions(live, off, args.deltas, args.interval_ms, args.log_level, args.keep_logs)
    )
    levels: list[LevelReport] = []
    listener: LiveFloorListener | None = None
    sdk_client: anthropic.AsyncAnthropic | None = None
    try:
        await stack.start()
        listener = LiveFloorListener(stack.live_floor_url)
        await listener.start()
        floor_input = FloorInput(args.deltas, args.interval_ms / 1000, off.batch_ms)
        sdk_client = anthropic.AsyncAnthropic(
            api_key="bench-key", base_url=stack.fake_url, max_retries=0
        )
        compression = not args.no_ws_deflate
        drivers: dict[str, Driver] = {
            "sdk": SdkDriver(sdk_client, args.turn_timeout),
            "relay-floor": FloorDriver(
                stack.client,
                stack.floor_queue,
                floor_input,
                timedelta(milliseconds=floor_cooldown_ms),
                args.turn_timeout,
            ),
            "live-floor": LiveFloorDriver(listener, args.turn_timeout),
            **{
                name: ParleyDriver(
                    end.ws_url, end.counts_url, args.turn_timeout, compression, phase=name
                )
                for name, end in stack.parley.items()
            },
        }
        say("warming up (2 turns of each kind) ...")
        for phase in phases:
            res = await run_phase(
                drivers[phase], 1, 0, 2, args.deltas, stack.meter, f"warm-up {phase}"
            )
            if res.errors:
                raise BenchError(f"warm-up {phase} turns failed: {res.errors[0]}")
        await asyncio.sleep(args.linger_s + 1)  # the warm-up turns' workflows close
        say(f"measuring idle CPU ({args.idle_s:g} s without turns) ...")
        before = stack.meter.snapshot()
        await asyncio.sleep(args.idle_s)
        used = CpuMeter.delta(before, stack.meter.snapshot())
        idle = {name: cpu / args.idle_s for name, cpu in used.items()}
        print_idle(idle, args.idle_s)
        for sessions in args.sessions:
            results: dict[str, PhaseResult] = {}
            for phase in phases:
                per = args.floor_turns if phase in FLOORS else args.turns
                turns = turns_for(sessions, per, args.min_samples)
                label = f"{phase} x{sessions}"
                say(f"  {label}: {args.warmup} warm-up + {turns} measured turns per session")
                stack.check()
                results[phase] = await run_phase(
                    drivers[phase],
                    sessions,
                    args.warmup,
                    turns,
                    args.deltas,
                    stack.meter,
                    label,
                    args.think_ms / 1000,
                )
            for phase in WITH_HISTORY:
                if phase in results and args.history_sample:
                    ids = [s.workflow_id for s in results[phase].ok if s.workflow_id]
                    results[phase].histories = await sample_histories(
                        stack.client, ids, args.history_sample, args.linger_s + args.turn_timeout
                    )
            level = LevelReport(sessions, results, idle)
            print_level(level, args.deltas, args.interval_ms)
            if args.diagnose:
                for phase in WITH_HISTORY:
                    if phase in results:
                        await print_timeline(stack.client, results[phase])
                        if phase in DURABLE_TOKENS:
                            await print_latency_split(stack.client, results[phase])
            levels.append(level)
        print_temporal(levels)
        print_summary(levels)
        passed = print_targets(levels, args.deltas)
        print(
            f"\nParley: {live.describe()}\nlive lane off: {off.describe()}",
            flush=True,
        )
        return passed
    except BaseException:
        stack.failed = True
        raise
    finally:
        if listener is not None:
            await listener.aclose()
        if sdk_client is not None:
            await sdk_client.close()
        await stack.stop()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Parley turn latency, live lane on and off, against the raw floors of "
        "the durable relay (Workflow Streams) and of the live lane (LISTEN/NOTIFY).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--sessions",
        type=lambda s: [int(x) for x in s.split(",") if x.strip()],
        default=[1, 10, 50],
        help="comma-separated concurrency levels",
    )
    parser.add_argument(
        "--turns",
        type=int,
        default=8,
        help="measured Parley (live on and off) and bare SDK turns per session",
    )
    parser.add_argument(
        "--floor-turns", type=int, default=3, help="measured turns per session of each floor"
    )
    parser.add_argument(
        "--min-samples",
        type=int,
        default=30,
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
        "--phases", default=",".join(PHASES), help=f"which of {','.join(PHASES)} to run"
    )
    parser.add_argument(
        "--history-sample",
        type=int,
        default=20,
        help="finished turns per system and level whose Temporal history is counted (0: none)",
    )
    parser.add_argument(
        "--idle-s",
        type=float,
        default=10.0,
        help="seconds of CPU measured with no turns, before the levels (the baseline the "
        "report takes off CPU per turn)",
    )
    tuning = parser.add_argument_group("relay settings")
    tuning.add_argument(
        "--batch-ms",
        type=float,
        help="Parley's batch interval (default: PARLEY_RELAY_BATCH_INTERVAL as this "
        "environment sets it, else Parley's default)",
    )
    tuning.add_argument(
        "--poll-cooldown-ms",
        type=float,
        help="Parley's gateway subscriber poll cooldown (default: PARLEY_RELAY_POLL_COOLDOWN "
        "as this environment sets it, else Parley's default)",
    )
    tuning.add_argument(
        "--off-batch-ms",
        type=float,
        default=30.0,
        help="the batch interval with the live lane off (and the relay floor's)",
    )
    tuning.add_argument(
        "--off-poll-cooldown-ms",
        type=float,
        default=10.0,
        help="the gateway's poll cooldown with the live lane off",
    )
    tuning.add_argument(
        "--floor-poll-cooldown-ms",
        type=float,
        help="the relay floor subscriber's poll cooldown (default: --off-poll-cooldown-ms)",
    )
    tuning.add_argument(
        "--linger-s",
        type=float,
        default=1.0,
        help="PARLEY_TURN_LINGER of both pairs, in seconds (> 0; Parley's default is 60: "
        "the bench would keep hundreds of finished workflows open)",
    )
    parser.add_argument(
        "--no-ws-deflate",
        action="store_true",
        help="do not negotiate permessage-deflate (browsers do)",
    )
    parser.add_argument(
        "--diagnose",
        action="store_true",
        help="per level, print the workflow history of the median-TTFT turn of each "
        "Temporal system, and (where the durable relay carries the tokens) split per-delta "
        "latency at the moment the workflow got the delta",
    )
    parser.add_argument("--log-level", default="INFO", help="PARLEY_LOG_LEVEL of the children")
    parser.add_argument("--keep-logs", action="store_true", help="keep the children's logs")
    args = parser.parse_args(argv)
    args.phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    if args.idle_s <= 0:
        parser.error("--idle-s must be > 0")
    if args.linger_s <= 0:
        parser.error("--linger-s must be > 0 (PARLEY_TURN_LINGER rejects 0)")
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
    except (BenchError, ChildExited, TimeoutError) as err:
        say(f"bench failed: {err}")
        sys.exit(2)
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
