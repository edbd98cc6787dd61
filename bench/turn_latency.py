"""Turn latency: Parley against the raw Workflow Streams relay floor, at several concurrencies.

Run by hand from the project root (it is not a test):

    .venv/bin/python bench/turn_latency.py [--sessions 1,10,50] [--turns 5] ...

It brings up real parts (`bench.latency_stack`): PostgreSQL (DATABASE_URL's server, else an
embedded one; a fresh database either way), the Temporal dev server, the fake Anthropic API
in stamp mode (each text delta carries its send time, `--deltas` deltas every
`--interval-ms`), and Parley's worker and gateway as separate processes (so CPU and latency
are not blurred by one shared event loop). Clients run in this process
(`bench.latency_driver`). Per concurrency level it measures:

  sdk     the fake model through the bare anthropic SDK: its own time to first token
  floor   a minimal workflow owning a WorkflowStream, whose activity publishes the same
          deltas through WorkflowStreamClient.from_within_activity to a subscriber (no
          gateway, database or model): the relay's own floor
  parley  real turns over the WebSocket protocol: send_message -> stream_token ...

and prints (`bench.latency_report`), per level, Parley against the floor: time to first
token (and Parley's added TTFT: Parley's minus the bare SDK's, percentile by percentile),
per-delta latency (receive time minus the stamp in the token), turns per second, CPU
seconds per turn (worker + gateway + PostgreSQL + Temporal over the measured window) and
lost / duplicated / reordered deltas.

The relay's settings are Parley's own (PARLEY_RELAY_BATCH_INTERVAL,
PARLEY_RELAY_POLL_COOLDOWN); `--batch-ms` and `--poll-cooldown-ms` pass others to the
worker and gateway.
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

from bench.latency_driver import (
    Driver,
    FloorDriver,
    ParleyDriver,
    PhaseResult,
    SdkDriver,
    run_phase,
)
from bench.latency_report import (
    CORES,
    OTHER_CPU_WARN,
    LevelReport,
    print_latency_split,
    print_level,
    print_summary,
    print_timeline,
)
from bench.latency_stack import BenchError, Relay, Stack, StackOptions, say
from bench.relay_floor import FloorInput
from parley.stack.processes import ChildExited

PHASES = ("sdk", "floor", "parley")


def turns_for(sessions: int, turns: int, min_samples: int) -> int:
    """Turns per session: at least `turns`, and enough for `min_samples` TTFT samples."""
    return max(turns, math.ceil(min_samples / sessions))


async def bench(args: argparse.Namespace) -> bool:
    relay = Relay.resolve(args.batch_ms, args.poll_cooldown_ms)
    floor_cooldown_ms = (
        args.floor_poll_cooldown_ms
        if args.floor_poll_cooldown_ms is not None
        else relay.poll_cooldown_ms
    )
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    print(
        f"Parley turn latency vs the Workflow Streams relay floor\n"
        f"  {args.deltas} stamped deltas per turn, one every {args.interval_ms:g} ms; "
        f"sessions {args.sessions}, {args.think_ms:g} ms between a session's turns; "
        f"{CORES} CPU cores\n"
        f"  relay: {relay.describe()}\n"
        f"  floor: the same batch interval, subscriber poll cooldown "
        f"{floor_cooldown_ms:g} ms; library defaults otherwise",
        flush=True,
    )
    idle = await asyncio.to_thread(psutil.cpu_percent, 1.0)
    if idle > OTHER_CPU_WARN * 100 / CORES:
        say(
            f"WARNING: the machine is already {idle:.0f}% busy before the bench starts; "
            "other processes will skew the numbers"
        )
    stack = Stack(
        StackOptions(relay, args.deltas, args.interval_ms, args.log_level, args.keep_logs)
    )
    levels: list[LevelReport] = []
    try:
        await stack.start()
        floor_input = FloorInput(args.deltas, args.interval_ms / 1000, relay.batch_ms)
        sdk_client = anthropic.AsyncAnthropic(
            api_key="bench-key", base_url=stack.fake_url, max_retries=0
        )
        drivers: dict[str, Driver] = {
            "sdk": SdkDriver(sdk_client, args.turn_timeout),
            "floor": FloorDriver(
                stack.client,
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
            print_level(level)
            if args.diagnose:
                for phase in ("parley", "floor"):
                    if phase in reports:
                        await print_timeline(stack.client, reports[phase])
                        await print_latency_split(stack.client, reports[phase])
            levels.append(level)
        await sdk_client.close()
        passed = print_summary(levels)
        print(f"\nrelay settings: {relay.describe()}", flush=True)
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
    tuning = parser.add_argument_group(
        "relay settings (default: Parley's, PARLEY_RELAY_BATCH_INTERVAL and "
        "PARLEY_RELAY_POLL_COOLDOWN as this environment sets them)"
    )
    tuning.add_argument("--batch-ms", type=float, help="the model activity's batch interval")
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
