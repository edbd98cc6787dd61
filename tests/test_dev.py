"""`parley dev` on a bare data directory: embedded PostgreSQL and Temporal, worker and
gateway, stopped by SIGINT without orphans, and durable across a restart."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from parley.stack.processes import ChildProcess, free_port
from tests.helpers import WsClient

STARTUP_TIMEOUT = 90


def _env(data_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TEMPORAL_ADDRESS")}
    env.update(PARLEY_DATA_DIR=str(data_dir), PARLEY_PORT=str(port), PARLEY_LOG_LEVEL="WARNING")
    return env


class DevProcess:
    """`parley dev` as a child process, its output read line by line as it comes."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.child = ChildProcess(
            "parley dev",
            [sys.executable, "-m", "parley", "dev"],
            env=_env(data_dir, port),
            capture=True,
        )

    async def wait_for_line(self, text: str) -> None:
        """Until `parley dev` prints `text` (its banner comes once /readyz answers 200)."""
        await self.child.wait_for_line(text, timeout=STARTUP_TIMEOUT)

    async def stop(self) -> str:
        """SIGINT, a clean exit, and no process of its left behind; returns all output."""
        descendants = psutil.Process(self.child.pid).children(recursive=True)
        assert {p.name() for p in descendants} >= {"temporal"}, descendants
        self.child.send_signal(signal.SIGINT)
        async with asyncio.timeout(60):
            code = await self.child.exited()
        output = self.child.output
        assert code == 0, output
        _, alive = psutil.wait_procs(descendants, timeout=15)
        alive = [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
        assert not alive, f"orphans left running: {alive}"
        return output


@pytest.mark.timeout(240)
async def test_parley_dev_runs_on_a_bare_machine_and_survives_a_restart(server_dir: Path):
    data_dir, port = server_dir / "data", free_port()
    base = f"http://127.0.0.1:{port}"
    dev = DevProcess(data_dir, port)
    try:
        await dev.wait_for_line("Press Ctrl-C to stop.")
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{base}/readyz")).status_code == 200
            # Both processes serve /metrics; the banner says where.
            metrics = re.search(r"Metrics +(\S+) +\(worker (\S+)\)", dev.child.output)
            assert metrics is not None, dev.child.output
            assert metrics[1] == f"{base}/metrics"
            for url, family in zip(
                metrics.groups(), ("parley_ws_connections", "parley_model_calls"), strict=True
            ):
                page = await http.get(url)
                assert page.status_code == 200 and f"# TYPE {family}" in page.text, url
        async with await WsClient.open(f"ws://127.0.0.1:{port}/ws") as client:
            created = await client.create_session("agent-dev", userName="Dev")
    finally:
        output = await dev.stop()
    assert "Parley is running." in output and f"ws://127.0.0.1:{port}/ws" in output
    assert "UI http://" in output  # the Temporal UI is printed
    assert "permissive: any agent id opens a session" in output  # (unlike `parley gateway`)
    assert not (data_dir / "postgres" / "postmaster.pid").exists()  # postgres stopped too
    assert not (data_dir / "run" / "stores.json").exists()

    dev = DevProcess(data_dir, port)
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
