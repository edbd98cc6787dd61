"""The `parley` command: `dev` (everything), `gateway`, `worker`, `agent`."""

from __future__ import annotations

import asyncio

import click

from parley.logs import configure_logging
from parley.settings import Settings, get_settings
from parley.stores import StoresNotConfigured


def _settings() -> Settings:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    return settings


@click.group()
@click.version_option(package_name="parley")
def main() -> None:
    """Parley: a durable runtime for AI agents that talk to people."""


@main.command()
def dev() -> None:
    """Run PostgreSQL, Temporal, the worker and the gateway in one command.

    Stores named by DATABASE_URL / TEMPORAL_ADDRESS are used as they are; unset, embedded
    ones are started with their data under PARLEY_DATA_DIR (default ./.parley).
    """
    from parley.dev import run_dev

    asyncio.run(run_dev(_settings()))


@main.command()
def gateway() -> None:
    """Serve the gateway (WebSocket /ws, /healthz, /readyz) on PARLEY_HOST:PARLEY_PORT."""
    import uvicorn

    from gateway.app import create_app
    from gateway.serve import uvicorn_config
    from parley.stores import resolve_stores

    settings = _settings()
    try:
        resolve_stores(settings)  # fail here, clearly, rather than inside uvicorn's start-up
    except StoresNotConfigured as err:
        raise click.ClickException(str(err)) from None
    uvicorn.Server(uvicorn_config(create_app(settings), settings)).run()


@main.command()
def worker() -> None:
    """Run the Temporal worker (the same as `python worker.py`)."""
    import worker as worker_module

    worker_module.main()


@main.command("agent")
@click.argument("agent_id")
@click.option("--name", required=True, help="Display name sent to clients as agentName.")
@click.option("--org", default=None, help="Organization the agent's conversations belong to.")
@click.option(
    "--origin",
    "origins",
    multiple=True,
    help="Allowed embedding origin (`*`, exact, or `https://*.example.com`); repeat. "
    "Any --origin gives the agent an embed policy.",
)
@click.option("--auth-key", default=None, help="HMAC key that signs authContext for this agent.")
def agent(
    agent_id: str, name: str, org: str | None, origins: tuple[str, ...], auth_key: str | None
) -> None:
    """Register (or update) an agent and its embed policy."""
    from parley import db, sessions
    from parley.stores import resolve_stores

    settings = _settings()

    async def run() -> None:
        url = resolve_stores(settings).database_url
        await db.migrate(url)
        async with db.create_pool(url, max_size=1, name="cli") as pool:
            await sessions.upsert_agent(
                pool,
                agent_id,
                name=name,
                org_id=org or settings.org,
                allowed_origins=list(origins) if origins or auth_key else None,
                auth_key=auth_key,
            )

    try:
        asyncio.run(run())
    except StoresNotConfigured as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"agent {agent_id} saved")
