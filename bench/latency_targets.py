"""Turn latency, the targets: Parley as shipped (live lane on) against the issue's numbers,
each PASS or FAIL with the baselines' figures beside it.

Latency targets are p95 unless named; a level the run did not measure is not judged. The
per-turn cost targets are for a 100-delta turn: with other `--deltas` they are shown, not
judged. Temporal counts are judged on their mean over the sampled turns (the max is shown).
"""

from __future__ import annotations

import math

from bench.latency_report import (
    LevelReport,
    ms,
    other_load_warnings,
)

DELTA_P95 = {50: 0.150}  # per-delta delivery, by sessions
TTFT_P95 = {50: 0.500, 10: 0.150}
ADDED_TTFT_P50 = {1: 0.030}  # Parley's TTFT minus the bare SDK's
SIGNALS_AND_UPDATES = 8.0  # per 100-delta turn
HISTORY_EVENTS = 60.0
CPU_SECONDS = 0.1  # worker + gateway + Temporal + PostgreSQL, the fake model apart
COST_DELTAS = 100


def print_targets(levels: list[LevelReport], deltas: int) -> bool:
    lines = ["", "== targets (Parley as shipped: live lane on) =="]
    passed = True

    def check(name: str, value: float, limit: float, detail: str, judged: bool = True) -> None:
        nonlocal passed
        ok = not math.isnan(value) and value <= limit
        if judged:
            passed = passed and ok
            verdict = "PASS" if ok else "FAIL"
        else:
            verdict = "n/a "
        lines.append(f"  [{verdict}] {name}: {detail}")

    def seconds(name: str, limit: float, values: dict[str, float]) -> None:
        """A latency target on Parley's value, with the baselines' beside it."""
        mine = values["parley"]
        over = f", {mine / limit:.1f}x the target" if mine > limit else ""
        base = "; ".join(
            f"{label} {ms(values[p])} ms"
            for p, label in (("parley-off", "live off"), ("live-floor", "live floor"))
            if not math.isnan(values[p])
        )
        check(name, mine, limit, f"{ms(mine)} ms{over}" + (f" ({base})" if base else ""))

    systems = ("parley", "parley-off", "live-floor")
    for level in levels:
        n = level.sessions
        if level.get("parley") is None:
            continue
        if n in DELTA_P95:
            seconds(
                f"per-delta p95 <= {ms(DELTA_P95[n])} ms at {n} sessions",
                DELTA_P95[n],
                {p: level.delta(p)[1] for p in systems},
            )
        if n in TTFT_P95:
            seconds(
                f"TTFT p95 <= {ms(TTFT_P95[n])} ms at {n} sessions",
                TTFT_P95[n],
                {p: level.ttft(p)[1] for p in systems},
            )
        if n in ADDED_TTFT_P50 and level.get("sdk") is not None:
            seconds(
                f"added TTFT p50 <= {ms(ADDED_TTFT_P50[n])} ms at {n} session(s)",
                ADDED_TTFT_P50[n],
                {  # a floor has no model: its whole TTFT is what it adds
                    "parley": level.added_ttft("parley")[0],
                    "parley-off": level.added_ttft("parley-off")[0],
                    "live-floor": level.ttft("live-floor")[0],
                },
            )

    judged = deltas == COST_DELTAS
    note = "" if judged else f" (measured with {deltas}-delta turns: not judged)"
    for level in levels:
        n = level.sessions
        if level.get("parley") is None:
            continue
        h, off = level.history("parley"), level.history("parley-off")
        if h is not None:
            was = f"; live off {off.mean['signals_and_updates']:.1f}" if off else ""
            check(
                f"signals + updates per turn <= {SIGNALS_AND_UPDATES:g} at {n} sessions{note}",
                h.mean["signals_and_updates"],
                SIGNALS_AND_UPDATES,
                f"{h.mean['signals_and_updates']:.1f} (max {h.max['signals_and_updates']}"
                f"{was}; {h.turns} turns)",
                judged,
            )
            was = f"; live off {off.mean['events']:.1f}" if off else ""
            check(
                f"history events per turn <= {HISTORY_EVENTS:g} at {n} sessions{note}",
                h.mean["events"],
                HISTORY_EVENTS,
                f"{h.mean['events']:.1f} (max {h.max['events']}{was})",
                judged,
            )
        cpu, cpu_off = level.cpu_per_turn("parley"), level.cpu_per_turn("parley-off")
        over = f", {cpu / CPU_SECONDS:.1f}x the target" if cpu > CPU_SECONDS else ""
        was = "" if math.isnan(cpu_off) else f"; live off {cpu_off:.3f} s"
        check(
            f"CPU per turn <= {CPU_SECONDS:g} s at {n} sessions{note}",
            cpu,
            CPU_SECONDS,
            f"{cpu:.3f} s{over} (less idle CPU {level.net_cpu_per_turn('parley'):.3f} s{was})",
            judged,
        )

    for level in levels:
        for phase, label in (("parley", "Parley"), ("parley-off", "live lane off")):
            if level.get(phase) is None:
                continue
            found = level.integrity(phase)
            assert found is not None
            res = level.get(phase)
            assert res is not None
            ok = level.clean(phase)
            check(
                f"0 lost/duplicated/out-of-order deltas, 0 failed turns: {label} at "
                f"{level.sessions} sessions",
                0.0 if ok else 1.0,
                0.0,
                f"{found[1]}/{found[2]}/{found[3]} of {found[0]}, {len(res.errors)} failed",
            )
    lines += other_load_warnings(levels)
    print("\n".join(lines), flush=True)
    return passed
