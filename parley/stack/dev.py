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
import sys
from contextlib import AsyncExitStack
from pathlib import Path

import click

from parley import temporal_client
from parley.settings import Settings
from parley.stack.embedded import start_postgres, start_temporal
from parley.stack.processes import ChildExited, ChildProcess, free_port, http_ok, wait_until
from parley.storage import db
from parley.stores import Stores, clear_state, write_state

READY_TIMEOUT = 90.0


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
        if configured := settings.temporal_address or temporal_client.configured_address():
            temporal_address, temporal_ui = configured, None
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
            # A development stack: any agent id may open a session (see the banner).
            "PARLEY_WIDGET_AUTH_STRICT": os.environ.get("PARLEY_WIDGET_AUTH_STRICT", "false"),
            # The worker's /metrics, on a free port unless one is set (see the banner).
            "PARLEY_WORKER_METRICS_PORT": str(
                settings.worker_metrics_port or free_port(settings.worker_metrics_host)
            ),
        }
        click.echo("Starting the worker and the gateway ...")
        children: list[ChildProcess] = []
        for name, argv in (
            ("worker", [sys.executable, "-m", "worker"]),
            ("gateway", [sys.executable, "-m", "parley", "gateway"]),
        ):
            # Own session: Ctrl-C reaches `parley dev`, which stops the children in order.
            child = ChildProcess(
                name, argv, env=env, log_path=logs / f"{name}.log", new_session=True
            )
            stack.callback(child.stop)  # stopped before the stores (LIFO)
            children.append(child)

        base = f"http://{settings.host}:{settings.port}"
        worker_metrics = (
            f"http://{settings.worker_metrics_host}:{env['PARLEY_WORKER_METRICS_PORT']}/metrics"
        )
        # The banner promises both: the gateway ready and the worker up (its /metrics).
        ready = asyncio.create_task(_wait_ready([f"{base}/readyz", worker_metrics], children))
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait([ready, stopped], return_when=asyncio.FIRST_COMPLETED)
        if stopped.done():
            ready.cancel()
            return
        stopped.cancel()
        ready.result()
        _banner(
            settings,
            base,
            database_url,
            pg_where,
            temporal_address,
            temporal_ui,
            logs,
            worker_metrics,
        )

        waits = [asyncio.create_task(c.exited()) for c in children]
        stopped = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([*waits, stopped], return_when=asyncio.FIRST_COMPLETED)
        for task in [*waits, stopped]:
            task.cancel()
        for child, task in zip(children, waits, strict=True):
            if task in done:
                click.echo(f"The {child.name} exited (code {child.returncode}); stopping.")
        click.echo("Stopping ...")
    click.echo("Stopped.")


async def _wait_ready(urls: list[str], children: list[ChildProcess]) -> None:
    """Until every one of `urls` answers 200; a child that exits during start-up ends it."""
    try:
        probes = [http_ok(url) for url in urls]

        async def all_ok() -> bool:
            return all([await probe() for probe in probes])

        await wait_until(
            all_ok, children, timeout=READY_TIMEOUT, what=" and ".join(urls), interval=0.2
        )
    except ChildExited as err:
        raise click.ClickException(
            f"the {err.child.name} exited during start-up (code {err.code});"
            " see its log under the data directory's logs/"
        ) from None


def _banner(
    settings: Settings,
    base: str,
    database_url: str,
    pg_where: str,
    temporal_address: str,
    temporal_ui: str | None,
    logs: Path,
    worker_metrics: str,
) -> None:
    ws = base.replace("http://", "ws://", 1)
    admin = (
        f"http://{settings.admin_host}:{settings.admin_port}"
        if settings.admin_port is not None
        else None
    )
    lines = [
        "",
        "Parley is running.",
        f"  Chat page      {base}/",
        f"  WebSocket      {ws}/ws",
        f"  Health         {base}/readyz",
        *([f"  Admin API      {admin}/admin"] if admin is not None else []),
        f"  Metrics        {admin or base}/metrics  (worker {worker_metrics})",
        f"  Temporal       {temporal_address}"
        + (f"  (UI {temporal_ui})" if temporal_ui else "  (TEMPORAL_ADDRESS)"),
        f"  PostgreSQL     {_redact(database_url)}  ({pg_where})",
        f"  Data / logs    {settings.data_dir.resolve()}  /  {logs}",
    ]
    if not settings.has_model_key:
        lines.append(
            "  Model          no ANTHROPIC_API_KEY: sessions work, send_message is refused"
        )
    if os.environ.get("PARLEY_WIDGET_AUTH_STRICT", "false").lower() in ("0", "false", "no"):
        lines.append(
            "  Agents         permissive: any agent id opens a session"
            " (`parley gateway` refuses unregistered agents)"
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
