"""`parley dev` on a bare data directory: embedded PostgreSQL and Temporal, worker and
gateway, stopped by SIGINT without orphans, and durable across a restart."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from parley.stack.embedded import free_port
from tests.helpers import WsClient

STARTUP_TIMEOUT = 90


def _env(data_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TEMPORAL_ADDRESS")}
    env.update(PARLEY_DATA_DIR=str(data_dir), PARLEY_PORT=str(port), PARLEY_LOG_LEVEL="WARNING")
    return env


class DevProcess:
    """`parley dev` as a child process, its output read line by line as it comes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []

    @classmethod
    async def start(cls, data_dir: Path, port: int) -> DevProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "parley",
            "dev",
            env=_env(data_dir, port),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        return cls(process)

    async def wait_for_line(self, text: str) -> None:
        """Until `parley dev` prints `text` (its banner comes once /readyz answers 200)."""
        assert self.process.stdout is not None
        async with asyncio.timeout(STARTUP_TIMEOUT):
            while not any(text in line for line in self.lines):
                line = await self.process.stdout.readline()
                assert line, "parley dev exited:\n" + "".join(self.lines)
                self.lines.append(line.decode())

    async def stop(self) -> str:
        """SIGINT, a clean exit, and no process of its left behind; returns all output."""
        descendants = psutil.Process(self.process.pid).children(recursive=True)
        assert {p.name() for p in descendants} >= {"temporal"}, descendants
        self.process.send_signal(signal.SIGINT)
        rest, _ = await asyncio.wait_for(self.process.communicate(), 60)
        output = "".join(self.lines) + rest.decode()
        assert self.process.returncode == 0, output
        _, alive = psutil.wait_procs(descendants, timeout=15)
        alive = [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
        assert not alive, f"orphans left running: {alive}"
        return output


@pytest.mark.timeout(240)
async def test_parley_dev_runs_on_a_bare_machine_and_survives_a_restart(tmp_path: Path):
    data_dir, port = tmp_path / "data", free_port()
    base = f"http://127.0.0.1:{port}"
    dev = await DevProcess.start(data_dir, port)
    try:
        await dev.wait_for_line("Press Ctrl-C to stop.")
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{base}/readyz")).status_code == 200
        async with await WsClient.open(f"ws://127.0.0.1:{port}/ws") as client:
            created = await client.create_session("agent-dev", userName="Dev")
    finally:
        output = await dev.stop()
    assert "Parley is running." in output and f"ws://127.0.0.1:{port}/ws" in output
    assert "UI http://" in output  # the Temporal UI is printed
    assert not (data_dir / "postgres" / "postmaster.pid").exists()  # postgres stopped too
    assert not (data_dir / "run" / "stores.json").exists()

    dev = await DevProcess.start(data_dir, port)
    try:
        await dev.wait_for_line("Press Ctrl-C to stop.")
        async with await WsClient.open(f"ws://127.0.0.1:{port}/ws") as client:
            again = await client.request(
                {"action": "get_session", "requestId": "g", "sessionId": created["sessionId"]}
            )
    finally:
        await dev.stop()
    assert again["type"] == "immediate_response", again
    assert again["data"]["conversationId"] == created["conversationId"]
