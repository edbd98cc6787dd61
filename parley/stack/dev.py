"""`parley dev`: the whole stack in one command, on embedded defaults.

Starts (or uses the configured) PostgreSQL and Temporal, applies migrations, records the
stores for other processes on the same data directory, then runs the worker and the
gateway as child processes and waits. Ctrl-C (or SIGTERM) stops everything in reverse
order; the children are also tied to this process's life, so none is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from contextlib import AsyncExitStack
from pathlib import Path

import click
import httpx

from parley.logs import get_logger
from parley.settings import Settings
from parley.stack.embedded import die_with_parent, start_postgres, start_temporal
from parley.storage import db
from parley.stores import Stores, clear_state, write_state

log = get_logger("parley.stack.dev")

READY_TIMEOUT = 90.0
STOP_TIMEOUT = 10.0


class Child:
    """A Parley process started by `parley dev` (worker or gateway)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            argv,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches `parley dev`, which stops us in order
            preexec_fn=die_with_parent(),
        )

    async def wait(self) -> int:
        return await asyncio.to_thread(self.process.wait)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                log.warning("child did not stop, killing it", child=self.name)
                self.process.kill()
                self.process.wait()
        self._log.close()


async def _wait_ready(url: str, children: list[Child]) -> None:
    async with httpx.AsyncClient(timeout=2) as http, asyncio.timeout(READY_TIMEOUT):
        while True:
            for child in children:
                if child.process.poll() is not None:
                    code = child.process.returncode
                    raise click.ClickException(
                        f"the {child.name} exited during start-up (code {code});"
                        " see its log under the data directory's logs/"
                    )
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.2)


async def run_dev(settings: Settings) -> None:
    data_dir = settings.data_dir.expanduser().resolve()
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async with AsyncExitStack() as stack:
        if settings.database_url:
            database_url, pg_where = settings.database_url, "DATABASE_URL"
        else:
            click.echo("Starting embedded PostgreSQL ...")
            pg = await asyncio.to_thread(start_postgres, data_dir)
            stack.callback(pg.stop)
            database_url, pg_where = pg.url, f"embedded, data in {pg.pgdata}"
        if settings.temporal_address:
            temporal_address, temporal_ui = settings.temporal_address, None
        else:
            click.echo("Starting the Temporal dev server ...")
            temporal = await start_temporal(data_dir, namespace=settings.temporal_namespace)
            stack.callback(temporal.stop)
            temporal_address, temporal_ui = temporal.address, temporal.ui_url
        await db.migrate(database_url)
        write_state(data_dir, Stores(database_url, temporal_address))
        stack.callback(clear_state, data_dir)

        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "TEMPORAL_ADDRESS": temporal_address,
            "PARLEY_DATA_DIR": str(data_dir),
        }
        click.echo("Starting the worker and the gateway ...")
        children: list[Child] = []
        for name, argv in (
            ("worker", [sys.executable, "-m", "worker"]),
            ("gateway", [sys.executable, "-m", "parley", "gateway"]),
        ):
            child = Child(name, argv, env, logs / f"{name}.log")
            stack.callback(child.stop)  # stopped before the stores (LIFO)
            children.append(child)

        base = f"http://{settings.host}:{settings.port}"
        ready = asyncio.create_task(_wait_ready(f"{base}/readyz", children))
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait([ready, stopped], return_when=asyncio.FIRST_COMPLETED)
        if stopped.done():
            ready.cancel()
            return
        stopped.cancel()
        ready.result()
        _banner(settings, base, database_url, pg_where, temporal_address, temporal_ui, logs)

        waits = [asyncio.create_task(c.wait()) for c in children]
        stopped = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([*waits, stopped], return_when=asyncio.FIRST_COMPLETED)
        for task in [*waits, stopped]:
            task.cancel()
        for child, task in zip(children, waits, strict=True):
            if task in done:
                click.echo(f"The {child.name} exited (code {child.process.returncode}); stopping.")
        click.echo("Stopping ...")
    click.echo("Stopped.")


def _banner(
    settings: Settings,
    base: str,
    database_url: str,
    pg_where: str,
    temporal_address: str,
    temporal_ui: str | None,
    logs: Path,
) -> None:
    ws = base.replace("http://", "ws://", 1)
    lines = [
        "",
        "Parley is running.",
        f"  Chat page      {base}/",
        f"  WebSocket      {ws}/ws",
        f"  Health         {base}/readyz",
        f"  Temporal       {temporal_address}"
        + (f"  (UI {temporal_ui})" if temporal_ui else "  (TEMPORAL_ADDRESS)"),
        f"  PostgreSQL     {_redact(database_url)}  ({pg_where})",
        f"  Data / logs    {settings.data_dir.resolve()}  /  {logs}",
    ]
    if not settings.has_model_key:
        lines.append(
            "  Model          no ANTHROPIC_API_KEY: sessions work, send_message is refused"
        )
    lines += ["", "Press Ctrl-C to stop."]
    click.echo("\n".join(lines), nl=True)


def _redact(url: str) -> str:
    """A connection URL without its password."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    with contextlib.suppress(Exception):
        parts = conninfo_to_dict(url)
        if parts.get("password"):
            parts["password"] = "***"
            return make_conninfo("", **parts)
    return url
