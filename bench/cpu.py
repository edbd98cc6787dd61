"""CPU seconds of the processes a bench brings up, and of everything else on the machine."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import psutil
import psycopg

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


def with_children(root: psutil.Process) -> Callable[[], list[psutil.Process]]:
    def processes() -> list[psutil.Process]:
        try:
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    return processes


def postgres_processes(url: str) -> Callable[[], list[psutil.Process]]:
    """The processes of `url`'s PostgreSQL server when it runs on this machine (the
    postmaster, found as a backend's parent, and its children); else every local process
    named postgres. Nothing else should use that server during a run."""
    with psycopg.connect(url, connect_timeout=10) as conn:
        backend = conn.execute("select pg_backend_pid()").fetchone()[0]
        with contextlib.suppress(psutil.Error):  # while the backend lives
            postmaster = psutil.Process(backend).parent()
            if postmaster is not None and postmaster.name() == "postgres":
                return with_children(postmaster)
    return lambda: [p for p in psutil.process_iter(["name"]) if p.info["name"] == "postgres"]
