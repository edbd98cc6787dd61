"""Turn latency, the report: per concurrency level, Parley against the relay floor, then
the targets; with --diagnose, where the median turn's time went."""

from __future__ import annotations

import base64
import math
from collections import Counter
from dataclasses import dataclass

import psutil
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.workflow_streams import PublishInput

from bench.cpu import OTHER
from bench.latency_driver import PhaseResult, stamps
from parley.turn.events import TURN_EVENT, Token

CORES = psutil.cpu_count() or 1


def pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    s = sorted(values)
    k = (len(s) - 1) * q
    lo = math.floor(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value * 1000:.0f}"


def p50_p95(values: list[float]) -> tuple[float, float]:
    return pct(values, 0.50), pct(values, 0.95)


def p50_p95_of(res: PhaseResult | None, metric: str) -> tuple[float, float]:
    """p50 and p95 of a phase's `ttft` or `delta_latency` (NaN for a phase not run)."""
    return p50_p95(getattr(res, metric)) if res else (math.nan, math.nan)


def against_target(value: float, level: LevelReport) -> str:
    return f"{value:.2f}x" + (" (target <= 1.25x)" if level.sessions > 1 else "")


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


def print_level(level: LevelReport) -> None:
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

    p_ttft, f_ttft, s_ttft = (p50_p95_of(res, "ttft") for res in (parley, floor, sdk))
    row("TTFT p50 / p95", pair(p_ttft), pair(f_ttft), f"{ratio(p_ttft[1], f_ttft[1]):.2f}x raw")
    row("  model TTFT via bare SDK", pair(s_ttft), "")
    added = (p_ttft[0] - s_ttft[0], p_ttft[1] - s_ttft[1])
    level.added_ttft = added
    level.ttft_ratio = ratio(added[1], f_ttft[1])
    row("  Parley added TTFT", pair(added), pair(f_ttft), against_target(level.ttft_ratio, level))
    p_d, f_d, s_d = (p50_p95_of(res, "delta_latency") for res in (parley, floor, sdk))
    level.delta_ratio = ratio(p_d[1], f_d[1])
    row(
        "per-delta latency p50 / p95",
        pair(p_d),
        pair(f_d),
        against_target(level.delta_ratio, level),
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


def wire_payload(data: str) -> Payload:
    """A published item's payload from its wire form (`PublishEntry.data`: base64 of the
    serialized Payload, as the library documents it)."""
    payload = Payload()
    payload.ParseFromString(base64.b64decode(data))
    return payload


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
                item = converter.from_payload(wire_payload(entry.data), TURN_EVENT)
                for stamp in stamps(item.text if isinstance(item, Token) else ""):
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
