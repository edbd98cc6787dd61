"""The embedded stores `parley dev` runs: state survives restarts, nothing is left running.

These start real servers (PostgreSQL via pgserver, the Temporal CLI dev server) in temporary
directories, independent of the session fixtures in conftest.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from pathlib import Path

import psutil
import psycopg
import pytest
from temporalio import workflow
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from parley.stack.embedded import EmbeddedStoreError, start_postgres, start_temporal
from parley.stack.processes import ChildProcess, free_port

ROOT = Path(__file__).resolve().parent.parent


def _live_processes_mentioning(text: str) -> list[psutil.Process]:
    """Processes (zombies excluded: PID 1 in a container may never reap them) whose
    command line mentions `text`."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if any(text in part for part in proc.info["cmdline"] or ()):
            found.append(proc)
    return found


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def _spawn_holder(script: str, cwd: Path) -> tuple[ChildProcess, dict]:
    """Run `script` in a child Python; return it and the JSON it prints after `READY `."""
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    child = ChildProcess("holder", [sys.executable, "-c", script], env=env, cwd=cwd, capture=True)
    line = await child.wait_for_line("READY ", timeout=60)
    return child, json.loads(line.removeprefix("READY "))


async def _sigkill(child: ChildProcess) -> None:
    child.send_signal(signal.SIGKILL)
    async with asyncio.timeout(10):
        await child.exited()


# --------------------------------------------------------------------------- PostgreSQL


def test_postgres_data_survives_restart(server_dir: Path) -> None:
    pg = start_postgres(server_dir)
    pgdata = str(server_dir / "postgres")
    assert not pg.attached
    with psycopg.connect(pg.url) as conn:
        assert conn.execute("select current_database()").fetchone() == ("parley",)
        conn.execute("create table notes (body text)")
        conn.execute("insert into notes values ('remember me')")

    # A second start while it runs attaches to the same server...
    again = start_postgres(server_dir)
    assert (again.attached, again.pid, again.url) == (True, pg.pid, pg.url)
    # ...and releasing that handle leaves the server to the first one.
    again.stop()
    with psycopg.connect(pg.url) as conn:
        assert conn.execute("select count(*) from notes").fetchone() == (1,)

    pg.stop()
    pg.stop()  # idempotent
    assert _live_processes_mentioning(pgdata) == []

    restarted = start_postgres(server_dir)
    try:
        assert not restarted.attached
        assert restarted.pid != pg.pid
        with psycopg.connect(restarted.url) as conn:
            assert conn.execute("select body from notes").fetchall() == [("remember me",)]
    finally:
        restarted.stop()
    assert _live_processes_mentioning(pgdata) == []


async def test_postgres_attaches_to_server_of_killed_process(server_dir: Path) -> None:
    # A `parley dev` SIGKILLed mid-run (relative data dir, as the CLI's default `.parley`)...
    child, started = await _spawn_holder(
        "import json, signal\n"
        "from pathlib import Path\n"
        "from parley.logs import configure_logging\n"
        "from parley.stack.embedded import start_postgres\n"
        "configure_logging('WARNING')\n"
        "pg = start_postgres(Path('.parley'))\n"
        "print('READY ' + json.dumps({'url': pg.url, 'pid': pg.pid}), flush=True)\n"
        "signal.pause()\n",
        cwd=server_dir,
    )
    await _sigkill(child)
    assert _alive(started["pid"]), "postgres runs detached from the process that started it"

    # ...leaves postgres running; the next start attaches to it instead of failing.
    pg = await asyncio.to_thread(start_postgres, server_dir / ".parley")
    assert (pg.attached, pg.pid, pg.url) == (True, started["pid"], started["url"])
    with psycopg.connect(pg.url) as conn:
        assert conn.execute("select 1").fetchone() == (1,)

    # The dead process's handle does not count: stopping ours stops the server.
    await asyncio.to_thread(pg.stop)
    assert not _alive(started["pid"])
    assert _live_processes_mentioning(str(server_dir / ".parley" / "postgres")) == []


# ----------------------------------------------------------------------------- Temporal


@workflow.defn
class Echo:
    @workflow.run
    async def run(self, text: str) -> str:
        return f"echo: {text}"


async def test_temporal_workflow_survives_restart(tmp_path: Path) -> None:
    db = str(tmp_path / "temporal" / "temporal.db")
    workflow_id = f"echo-{uuid.uuid4().hex[:8]}"
    task_queue = f"embedded-test-{uuid.uuid4().hex[:6]}"

    server = await start_temporal(tmp_path)
    try:
        assert server.ui_url.startswith("http://127.0.0.1:")
        client = await Client.connect(server.address)
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=[Echo],
            workflow_runner=UnsandboxedWorkflowRunner(),
        ):
            result = await client.execute_workflow(
                Echo.run, "hi", id=workflow_id, task_queue=task_queue
            )
        assert result == "echo: hi"

        # One SQLite file, one server: a second start on the same data dir is refused.
        with pytest.raises(EmbeddedStoreError, match="in use by another Temporal"):
            await start_temporal(tmp_path)
    finally:
        server.stop()
    server.stop()  # idempotent
    assert server.process.poll() is not None
    assert _live_processes_mentioning(db) == []

    port = free_port()
    server = await start_temporal(tmp_path, port=port)
    try:
        assert server.address == f"127.0.0.1:{port}"
        client = await Client.connect(server.address)
        handle = client.get_workflow_handle(workflow_id)
        description = await handle.describe()
        assert description.status == WorkflowExecutionStatus.COMPLETED
        assert await handle.result() == "echo: hi"
    finally:
        server.stop()
    assert _live_processes_mentioning(db) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
async def test_temporal_dies_with_its_parent(tmp_path: Path) -> None:
    child, started = await _spawn_holder(
        "import asyncio, json\n"
        "from pathlib import Path\n"
        "from parley.logs import configure_logging\n"
        "from parley.stack.embedded import start_temporal\n"
        "configure_logging('WARNING')\n"
        "async def main():\n"
        "    server = await start_temporal(Path('.parley'))\n"
        "    print('READY ' + json.dumps({'pid': server.process.pid}), flush=True)\n"
        "    await asyncio.Event().wait()\n"
        "asyncio.run(main())\n",
        cwd=tmp_path,
    )
    await _sigkill(child)

    # The orphan gets SIGTERM; a restart right away waits for it to let go of the store.
    server = await start_temporal(tmp_path / ".parley", port=free_port())
    try:
        assert not _alive(started["pid"])
        client = await Client.connect(server.address)
        await client.service_client.check_health()
    finally:
        server.stop()
    assert _live_processes_mentioning(str(tmp_path / ".parley" / "temporal")) == []
