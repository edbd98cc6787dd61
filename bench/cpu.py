"""CPU seconds of the processes a bench brings up, and of everything else on the machine."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import psutil
import psycopg

OTHER = "other processes"

Processes = Callable[[], list[psutil.Process]]


@dataclass(frozen=True)
class Snapshot:
    """CPU seconds so far: per group, per process (by pid); and the whole machine's."""

    groups: dict[str, dict[int, float]]
    machine: float


class CpuMeter:
    """CPU seconds (user + system) of named process groups, and of the whole machine.

    Counted per process: one that starts during a window counts from its start, one that
    ends during it is not counted at all (the bench's processes and their pools live
    throughout). The machine's total minus the groups' is what other processes used
    meanwhile: on a shared machine, a measurement taken while something else was busy is
    not worth much.
    """

    def __init__(self) -> None:
        self.groups: dict[str, Processes] = {}

    def add(self, name: str, processes: Processes) -> None:
        self.groups[name] = processes

    def snapshot(self) -> Snapshot:
        groups: dict[str, dict[int, float]] = {}
        for name, processes in self.groups.items():
            used: dict[int, float] = {}
            for p in processes():
                with contextlib.suppress(psutil.Error):
                    t = p.cpu_times()
                    used[p.pid] = t.user + t.system
            groups[name] = used
        m = psutil.cpu_times()
        machine = m.user + m.nice + m.system + getattr(m, "irq", 0)
        machine += getattr(m, "softirq", 0) + getattr(m, "steal", 0)
        return Snapshot(groups, machine)

    @staticmethod
    def delta(before: Snapshot, after: Snapshot) -> dict[str, float]:
        """CPU seconds used per group between two snapshots, plus OTHER processes'."""
        used: dict[str, float] = {}
        for name, now in after.groups.items():
            then = before.groups.get(name, {})
            used[name] = sum(max(0.0, cpu - then.get(pid, 0.0)) for pid, cpu in now.items())
        used[OTHER] = max(0.0, after.machine - before.machine - sum(used.values()))
        return used


def with_children(root: psutil.Process) -> Processes:
    def processes() -> list[psutil.Process]:
        try:
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    return processes


def postgres_processes(server_url: str, databases: list[str]) -> Processes:
    """The processes of `server_url`'s PostgreSQL server (on this machine) that work for
    the bench: the backends connected to `databases`, and the server's own processes (the
    postmaster, WAL writer, checkpointer, ...: shared with whatever else uses the server,
    so an upper bound). Other databases' backends, such as other test runs on a shared
    server, are left out."""

    def processes() -> list[psutil.Process]:
        with psycopg.connect(server_url, autocommit=True, connect_timeout=10) as conn:
            me = conn.execute("select pg_backend_pid()").fetchone()
            rows = conn.execute(
                "select pid from pg_stat_activity"
                " where datname = any(%s) or backend_type <> 'client backend'",
                (databases,),
            ).fetchall()
        found: list[psutil.Process] = []
        with contextlib.suppress(psutil.Error):  # the postmaster: our own backend's parent
            parent = psutil.Process(me[0]).parent() if me else None
            if parent is not None and parent.name() in ("postgres", "postmaster"):
                found.append(parent)
        for (pid,) in rows:
            with contextlib.suppress(psutil.Error):
                found.append(psutil.Process(pid))
        return found

    return processes
