"""Real parts for every test: a fresh PostgreSQL database, the Temporal dev server, a gateway.

`DATABASE_URL` names the server to create the run's database on; unset, an embedded
PostgreSQL (pgserver) is started in a temporary directory. Either way each run gets its
own fresh database, dropped at the end.
"""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from parley.settings import Settings
from parley.stack import databases
from parley.stack.embedded import temporal_binary
from parley.stack.fake_anthropic import FakeAnthropic
from parley.stack.processes import ChildProcess, free_port
from tests.helpers import GatewayServer, WsClient, running_gateway, running_worker


@pytest.fixture(scope="session")
def database_server() -> Iterator[str]:
    """A conninfo for a server on which tests may create databases."""
    with databases.database_server() as url:
        yield url


@pytest.fixture(scope="session")
def database_url(database_server: str) -> Iterator[str]:
    """A fresh database for this test run."""
    with databases.fresh_database(database_server, "parley_test") as url:
        yield url


@pytest.fixture
def server_dir() -> Iterator[Path]:
    """A temporary directory for an embedded server's data, outside pytest's basetemp.

    Each pytest session that starts resets pytest's temporary root to mode 0700, which locks
    out PostgreSQL running as the `pgserver` user (under root), and prunes older basetemps.
    """
    with tempfile.TemporaryDirectory(prefix="parley-test-") as path:
        yield Path(path)


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(dev_server_existing_path=temporal_binary())
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


SUITE_LIMITS = {
    "ws_frame_rate": 100_000.0,
    "ws_frame_burst": 100_000,
    "ws_connections_per_ip": 10_000,
    "http_requests_per_ip_per_minute": 1_000_000,
    "sessions_per_ip_per_minute": 1_000_000,
    "turns_per_session_per_minute": 1_000_000,
    "turns_per_ip_per_minute": 1_000_000,
}


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
        # A finished turn stays readable this long (resume right after its end is tested);
        # short, so tests that wait for a workflow to close do not wait a minute.
        turn_linger=timedelta(seconds=3),
        # Tests open sessions on ad-hoc agent ids, as `parley dev` allows.
        widget_auth_strict=False,
        # The suite's webhook receivers listen on 127.0.0.1.
        webhook_allow_private=True,
        # The suite opens many sockets, sessions and turns from 127.0.0.1, and floods sockets
        # on purpose (fuzz, hostile input): the per-address and per-socket limits are raised
        # far out of its way, but stay on. tests/test_limits.py trips each one on gateways
        # of its own, with small limits.
        **SUITE_LIMITS,
    )


@pytest.fixture(scope="session")
async def worker(settings: Settings) -> AsyncIterator[None]:
    """An in-process worker on the run's task queue."""
    async with running_worker(settings):
        yield


@pytest.fixture(scope="session")
async def gateway(settings: Settings) -> AsyncIterator[GatewayServer]:
    async with running_gateway(settings) as server:
        yield server


@pytest.fixture
async def client(gateway: GatewayServer) -> AsyncIterator[WsClient]:
    """A protocol client on the run's gateway, closed after the test."""
    async with await WsClient.open(gateway.ws_url) as c:
        yield c


@pytest.fixture
async def pool(gateway: GatewayServer):
    """The gateway's own pool (the schema is migrated by its start-up)."""
    return gateway.services.pool


# Limits a child process gets from the settings it is started with (the suite's raised ones,
# or a test's own).
LIMIT_SETTINGS = (
    *SUITE_LIMITS,
    "turn_token_budget",
    "org_daily_tokens",
    "org_daily_usd",
    "agent_daily_tokens",
    "agent_daily_usd",
)


class Processes:
    """Parley workers and gateways as real OS processes (for crash and scale-out tests)."""

    def __init__(self) -> None:
        self.started: list[ChildProcess] = []

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
            "PARLEY_TURN_LINGER": f"{settings.turn_linger.total_seconds()}s",
            "PARLEY_WIDGET_AUTH_STRICT": "false",
            "PARLEY_WEBHOOK_ALLOW_PRIVATE": "true",
            **{f"PARLEY_{name.upper()}": str(getattr(settings, name)) for name in LIMIT_SETTINGS},
            **extra,
        }

    def worker(self, settings: Settings, *, capture: bool = False, **env: str) -> ChildProcess:
        """A worker process; `env` adds variables, `capture` keeps its output (`.output`)."""
        return self.start("worker", ["-m", "worker"], self.env(settings, **env), capture)

    async def gateway(
        self, settings: Settings, port: int | None = None, *, capture: bool = False, **env: str
    ) -> tuple[ChildProcess, int]:
        """A gateway process on `port` (a free one by default), once /readyz says 200."""
        port = port or free_port()
        env = self.env(settings, PARLEY_PORT=str(port), **env)
        process = self.start("gateway", ["-m", "parley", "gateway"], env, capture)
        await process.wait_http(f"http://127.0.0.1:{port}/readyz", timeout=60)
        return process, port

    def start(
        self, name: str, args: list[str], env: dict[str, str], capture: bool = False
    ) -> ChildProcess:
        """`python *args` as a child process, stopped when the test ends."""
        process = ChildProcess(name, [sys.executable, *args], env=env, capture=capture)
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.started:
            process.stop(timeout=20)


@pytest.fixture
def processes() -> Iterator[Processes]:
    procs = Processes()
    yield procs
    procs.stop_all()


@pytest.fixture
def isolated_settings(settings: Settings) -> Settings:
    """The run's settings on a task queue of their own (served only by what a test starts)."""
    return settings.model_copy(update={"task_queue": f"iso-{uuid.uuid4().hex[:8]}"})
