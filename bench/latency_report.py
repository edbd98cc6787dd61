"""Turn latency, the report: per concurrency level, Parley (live lane on, and off) against
its baselines side by side, with ratios; then what each turn cost Temporal, and a summary.

The systems (one phase each):
  parley       Parley as shipped: the live lane on, its relay settings
  parley-off   Parley with PARLEY_LIVE_LANE=false: the durable relay alone (short batches)
  relay-floor  raw Workflow Streams: a workflow's activity publishes, a subscriber polls
  live-floor   raw LISTEN/NOTIFY: one process NOTIFYs, the bench LISTENs
  sdk          the fake model through the bare anthropic SDK (the model's own share)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import psutil

from bench.cpu import OTHER
from bench.latency_driver import PhaseResult
from bench.temporal_counts import HistoryStats, stats

CORES = psutil.cpu_count() or 1
OTHER_CPU_WARN = 0.15  # of one core: more than that, and a phase's numbers are suspect


@dataclass(frozen=True)
class System:
    phase: str
    label: str
    cpu: tuple[str, ...]  # the CPU groups (processes) that are this system's cost


SYSTEMS = (
    System("parley", "Parley", ("worker", "gateway", "postgres", "temporal")),
    System("parley-off", "live lane off", ("worker-off", "gateway-off", "postgres", "temporal")),
    System("relay-floor", "relay floor", ("floor-worker", "temporal")),
    System("live-floor", "live floor", ("live-floor", "postgres")),
    System("sdk", "bare SDK", ()),
)
BY_PHASE = {s.phase: s for s in SYSTEMS}
PARLEY = ("parley", "parley-off")
MODEL = "fake-model"
CLIENT = "bench"


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


def pair(values: tuple[float, float], unit: str = "") -> str:
    if all(math.isnan(v) for v in values):
        return "-"
    return f"{ms(values[0])} / {ms(values[1])}{unit}"


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def times(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}x"


@dataclass
class LevelReport:
    """One concurrency level: each system's phase, and what the report derives from them."""

    sessions: int
    results: dict[str, PhaseResult]
    idle: dict[str, float]  # CPU seconds per second of each group with no turns at all

    def get(self, phase: str) -> PhaseResult | None:
        return self.results.get(phase)

    def ttft(self, phase: str) -> tuple[float, float]:
        res = self.get(phase)
        return p50_p95(res.ttft) if res else (math.nan, math.nan)

    def delta(self, phase: str) -> tuple[float, float]:
        res = self.get(phase)
        return p50_p95(res.delta_latency) if res else (math.nan, math.nan)

    def added_ttft(self, phase: str) -> tuple[float, float]:
        """The system's TTFT minus the bare SDK's, percentile by percentile."""
        mine, model = self.ttft(phase), self.ttft("sdk")
        return mine[0] - model[0], mine[1] - model[1]

    def cpu_per_turn(self, phase: str, groups: tuple[str, ...] | None = None) -> float:
        """CPU seconds per measured turn of the system's processes (or of `groups`)."""
        res = self.get(phase)
        if res is None or not res.turns:
            return math.nan
        names = BY_PHASE[phase].cpu if groups is None else groups
        return res.cpu_sum(names) / res.turns

    def net_cpu_per_turn(self, phase: str) -> float:
        """`cpu_per_turn` less what the system's processes use idle over the same window
        (Temporal's timers and pollers, idle workers): the turns' own cost."""
        res = self.get(phase)
        if res is None or not res.turns:
            return math.nan
        idle = sum(self.idle.get(n, 0.0) for n in BY_PHASE[phase].cpu) * res.window
        return self.cpu_per_turn(phase) - idle / res.turns

    def history(self, phase: str) -> HistoryStats | None:
        res = self.get(phase)
        return stats(res.histories) if res else None

    def lanes_per_turn(self, phase: str) -> tuple[float, float]:
        res = self.get(phase)
        if res is None or not res.turns or not res.lanes:
            return math.nan, math.nan
        return res.lanes["live"] / res.turns, res.lanes["durable"] / res.turns

    def integrity(self, phase: str) -> tuple[int, int, int, int] | None:
        res = self.get(phase)
        return res.integrity() if res else None

    def clean(self, phase: str) -> bool:
        """No lost, duplicated or misplaced delta and no failed turn or session."""
        res, found = self.get(phase), self.integrity(phase)
        return res is not None and found is not None and not any(found[1:]) and not res.errors


COL = 17


def print_level(level: LevelReport, deltas: int, interval_ms: float) -> None:
    ran = [s for s in SYSTEMS if s.phase in level.results]
    out = [
        "",
        f"== {level.sessions} concurrent session(s): {deltas} deltas per turn, one every "
        f"{interval_ms:g} ms ==",
        f"{'':36}" + "".join(f"{s.label:>{COL}}" for s in ran),
    ]

    def row(name: str, cells: list[str]) -> None:
        out.append(f"  {name:34}" + "".join(f"{c:>{COL}}" for c in cells))

    def turns(s: System) -> str:
        res = level.results[s.phase]
        return f"{res.turns} ({res.turns_per_session} each)"

    row("turns measured (per session)", [turns(s) for s in ran])
    row("TTFT p50 / p95 ms", [pair(level.ttft(s.phase)) for s in ran])
    row(
        "  minus the model's own (SDK)",
        [pair(level.added_ttft(s.phase)) if s.phase in PARLEY else "" for s in ran],
    )
    row("per-delta latency p50 / p95 ms", [pair(level.delta(s.phase)) for s in ran])

    def rate(s: System) -> str:
        res = level.results[s.phase]
        return f"{res.turns / res.window:.2f}" if res.window else "-"

    row("turns/s", [rate(s) for s in ran])

    def cpu(s: System, groups: tuple[str, ...] | None = None) -> str:
        if groups is None and not s.cpu:
            return ""
        value = level.cpu_per_turn(s.phase, groups)
        return "-" if math.isnan(value) else f"{value:.3f}"

    row("CPU s/turn, the system's processes", [cpu(s) for s in ran])

    def net(s: System) -> str:
        value = level.net_cpu_per_turn(s.phase)
        return "" if not s.cpu or math.isnan(value) else f"{value:.3f}"

    row("  less their idle CPU", [net(s) for s in ran])
    row("  fake model (apart)", [cpu(s, (MODEL,)) for s in ran])
    row("  bench client (apart)", [cpu(s, (CLIENT,)) for s in ran])

    def lanes(s: System) -> str:
        live, durable = level.lanes_per_turn(s.phase)
        return "" if math.isnan(live) else f"{live:.1f} / {durable:.1f}"

    row("items/turn by live / durable lane", [lanes(s) for s in ran])

    def history(s: System, metric: str) -> str:
        h = level.history(s.phase)
        return "" if h is None else f"{h.mean[metric]:.1f} (max {h.max[metric]})"

    row("signals + updates per turn", [history(s, "signals_and_updates") for s in ran])
    row("history events per turn", [history(s, "events") for s in ran])

    def integrity(s: System) -> str:
        found = level.integrity(s.phase)
        if found is None or s.phase == "sdk":
            return ""
        expected, lost, dup, misplaced = found
        return f"{lost}/{dup}/{misplaced} of {expected}"

    row("lost/dup/out-of-order deltas", [integrity(s) for s in ran])
    row("failed turns/sessions", [str(len(level.results[s.phase].errors)) for s in ran])

    def busy(s: System) -> str:
        res = level.results[s.phase]
        return f"{sum(res.cpu.values()) / res.window / CORES * 100:.0f}%" if res.window else "-"

    row(f"machine busy (of {CORES} cores)", [busy(s) for s in ran])
    resets = sum(s.resets for p in PARLEY if (r := level.get(p)) for s in r.samples)
    if resets:
        out.append(f"  stream resets (model retries): {resets}")

    out.append("  CPU s/turn by process:")
    for s in ran:
        res = level.results[s.phase]
        if not s.cpu or not res.turns:
            continue
        parts = ", ".join(f"{n} {res.cpu.get(n, 0) / res.turns:.3f}" for n in s.cpu)
        top = ", ".join(
            f"{n} {v / res.window * 100:.0f}%"
            for n, v in sorted(res.cpu.items(), key=lambda kv: -kv[1])
            if res.window and v / res.window >= 0.02
        )
        out.append(f"    {s.label}: {parts} (busiest, % of one core: {top})")

    ratios: list[str] = []
    for a, b in (
        ("parley", "live-floor"),
        ("parley", "relay-floor"),
        ("parley", "parley-off"),
        ("parley-off", "relay-floor"),
    ):
        if a not in level.results or b not in level.results:
            continue
        cells = [
            f"TTFT {times(ratio(level.ttft(a)[1], level.ttft(b)[1]))}",
            f"per-delta {times(ratio(level.delta(a)[1], level.delta(b)[1]))}",
        ]
        if BY_PHASE[b].cpu:
            cpu_ratio = ratio(level.cpu_per_turn(a), level.cpu_per_turn(b))
            cells.append(f"CPU/turn {times(cpu_ratio)}")
        ratios.append(f"    {BY_PHASE[a].label} / {BY_PHASE[b].label}: {', '.join(cells)}")
    if ratios:
        out += ["  ratios, p95:", *ratios]
    print("\n".join(out), flush=True)
    for s in ran:
        for line in level.results[s.phase].errors[:5]:
            print(f"    {s.label} error: {line}", flush=True)


def print_idle(idle: dict[str, float], seconds: float) -> None:
    busiest = sorted(idle.items(), key=lambda kv: -kv[1])
    shares = ", ".join(f"{n} {v * 100:.1f}%" for n, v in busiest)
    print(f"\nidle CPU, {seconds:g} s without turns, % of one core: {shares}", flush=True)


def print_temporal(levels: list[LevelReport]) -> None:
    """What each turn cost Temporal, from the histories of a sample of finished turns."""
    metrics = (
        ("signals", "signals"),
        ("updates", "updates"),
        ("signals_and_updates", "sig+upd"),
        ("workflow_tasks", "wf tasks"),
        ("activities", "activities"),
        ("timers", "timers"),
        ("events", "events"),
    )
    out = [
        "",
        "== Temporal per turn: the histories of a sample of finished turns, mean (max) ==",
        f"  {'sessions':>8}  {'system':14}{'turns':>6}" + "".join(f"{t:>12}" for _, t in metrics),
    ]
    for level in levels:
        for s in SYSTEMS:
            h = level.history(s.phase)
            if h is None:
                continue
            cells = "".join(f"{f'{h.mean[m]:.1f} ({h.max[m]})':>12}" for m, _ in metrics)
            out.append(f"  {level.sessions:>8}  {s.label:14}{h.turns:>6}{cells}")
    print("\n".join(out), flush=True)


def print_summary(levels: list[LevelReport]) -> None:
    """The run in two Markdown tables (latency; Parley's cost per turn), for the README."""
    latency = ("parley", "parley-off", "relay-floor", "live-floor")
    labels = [BY_PHASE[p].label for p in latency]
    out = [
        "",
        "== summary (Markdown) ==",
        "",
        "| sessions | TTFT p50 / p95 ms: "
        + " | ".join(labels)
        + " | per-delta p50 / p95 ms: "
        + " | ".join(labels)
        + " |",
        "| ---: " * (1 + 2 * len(latency)) + "|",
    ]
    for level in levels:
        cells = [pair(level.ttft(p)) for p in latency] + [pair(level.delta(p)) for p in latency]
        out.append(f"| {level.sessions} | " + " | ".join(cells) + " |")
    out += [
        "",
        "| sessions | system | CPU s/turn (worker, gateway, postgres, temporal) | "
        "signals + updates | history events | items live / durable | turns/s |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for level in levels:
        for phase in PARLEY:
            res = level.get(phase)
            if res is None or not res.turns:
                continue
            system = BY_PHASE[phase]
            parts = ", ".join(f"{res.cpu.get(n, 0) / res.turns:.3f}" for n in system.cpu)
            h = level.history(phase)
            counts = (
                (f"{h.mean['signals_and_updates']:.1f}", f"{h.mean['events']:.1f}")
                if h
                else ("-", "-")
            )
            live, durable = level.lanes_per_turn(phase)
            lanes = "-" if math.isnan(live) else f"{live:.1f} / {durable:.1f}"
            rate = f"{res.turns / res.window:.2f}" if res.window else "-"
            out.append(
                f"| {level.sessions} | {system.label} | {level.cpu_per_turn(phase):.3f} "
                f"({parts}) | {counts[0]} | {counts[1]} | {lanes} | {rate} |"
            )
    print("\n".join(out), flush=True)


def other_load_warnings(levels: list[LevelReport]) -> list[str]:
    """One line per phase during which other processes used much CPU."""
    lines = []
    for level in levels:
        for s in SYSTEMS:
            res = level.get(s.phase)
            share = res.cpu.get(OTHER, 0.0) / res.window if res and res.window else 0.0
            if res and share > OTHER_CPU_WARN:
                lines.append(
                    f"  WARNING: other processes on this machine used {share:.0%} of a core "
                    f"during {s.label} x{level.sessions}: its numbers are not trustworthy"
                )
    return lines
