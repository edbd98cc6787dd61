"""`parley dev` on a bare data directory: embedded PostgreSQL and Temporal, worker and
gateway, stopped by SIGINT without orphans, and durable across a restart."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from parley.embedded import free_port
from tests.helpers import WsClient

STARTUP_TIMEOUT = 90


def _env(data_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TEMPORAL_ADDRESS")}
    env.update(PARLEY_DATA_DIR=str(data_dir), PARLEY_PORT=str(port), PARLEY_LOG_LEVEL="WARNING")
    return env


async def _wait_ready(base: str, process: subprocess.Popen) -> None:
    async with httpx.AsyncClient(timeout=2) as http, asyncio.timeout(STARTUP_TIMEOUT):
        while True:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                if (await http.get(f"{base}/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.25)


def _start(data_dir: Path, port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "parley", "dev"],
        env=_env(data_dir, port),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def _stop(process: subprocess.Popen) -> str:
    descendants = psutil.Process(process.pid).children(recursive=True)
    assert {p.name() for p in descendants} >= {"temporal"}, descendants
    process.send_signal(signal.SIGINT)
    output, _ = await asyncio.to_thread(process.communicate, timeout=60)
    assert process.returncode == 0, output
    _, alive = psutil.wait_procs(descendants, timeout=15)
    alive = [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"orphans left running: {alive}"
    return output


@pytest.mark.timeout(240)
async def test_parley_dev_runs_on_a_bare_machine_and_survives_a_restart(tmp_path: Path):
    data_dir, port = tmp_path / "data", free_port()
    base = f"http://127.0.0.1:{port}"
    process = _start(data_dir, port)
    try:
        await _wait_ready(base, process)
        async with await WsClient.open(f"ws://127.0.0.1:{port}/ws") as client:
            created = await client.create_session("agent-dev", userName="Dev")
    finally:
        output = await _stop(process)
    assert "Parley is running." in output and f"ws://127.0.0.1:{port}/ws" in output
    assert "UI http://" in output  # the Temporal UI is printed
    assert not (data_dir / "postgres" / "postmaster.pid").exists()  # postgres stopped too
    assert not (data_dir / "run" / "stores.json").exists()

    process = _start(data_dir, port)
    try:
        await _wait_ready(base, process)
        async with await WsClient.open(f"ws://127.0.0.1:{port}/ws") as client:
            again = await client.request(
                {"action": "get_session", "requestId": "g", "sessionId": created["sessionId"]}
            )
    finally:
        await _stop(process)
    assert again["type"] == "immediate_response", again
    assert again["data"]["conversationId"] == created["conversationId"]
