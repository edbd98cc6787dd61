"""The harness shared by `parley dev`, the tests and the benches: child processes and fresh
databases."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import psycopg
import pytest

from parley.stack.databases import fresh_database
from parley.stack.processes import ChildExited, ChildProcess, free_port, wait_until

IGNORES_SIGTERM = (
    "import signal\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "signal.pause()\n"
)


async def test_captured_output_is_awaited_line_by_line() -> None:
    child = ChildProcess(
        "echo", [sys.executable, "-c", "print('one'); print('two: 2')"], capture=True
    )
    assert await child.wait_for_line("two", timeout=30) == "two: 2\n"
    assert await child.exited() == 0
    assert child.output == "one\ntwo: 2\n"
    with pytest.raises(ChildExited, match="code 0"):
        await child.wait_for_line("three", timeout=30)


async def test_stop_kills_a_child_that_ignores_sigterm() -> None:
    child = ChildProcess("stubborn", [sys.executable, "-c", IGNORES_SIGTERM], capture=True)
    await child.wait_for_line("ready", timeout=30)
    assert child.stop(timeout=0.5) == -signal.SIGKILL
    assert child.stop() == -signal.SIGKILL  # idempotent


async def test_waiting_for_readiness_ends_when_the_child_exits(tmp_path: Path) -> None:
    log_path = tmp_path / "quitter.log"
    script = "import sys; print('bad config', flush=True); sys.exit(3)"
    child = ChildProcess("quitter", [sys.executable, "-c", script], log_path=log_path)
    with pytest.raises(ChildExited, match="quitter exited with code 3:\nbad config") as caught:
        await child.wait_http(f"http://127.0.0.1:{free_port()}/readyz", timeout=60)
    assert caught.value.code == 3
    child.stop()
    assert log_path.read_text().startswith("\n--- quitter: ")


async def test_waiting_for_readiness_times_out_with_the_last_error() -> None:
    async def probe() -> bool:
        raise ConnectionRefusedError("nobody home")

    with pytest.raises(TimeoutError, match=r"thing not ready after 0\.2s.*nobody home"):
        await wait_until(probe, [], timeout=0.2, what="thing", interval=0.05)


def test_fresh_database_is_dropped_afterwards(database_server: str) -> None:
    with fresh_database(database_server, "parley_fresh") as url:
        with psycopg.connect(url) as conn:
            name = conn.execute("select current_database()").fetchone()[0]
        assert name.startswith("parley_fresh_")
    with psycopg.connect(database_server) as admin:
        found = admin.execute("select 1 from pg_database where datname = %s", (name,))
        assert found.fetchone() is None
