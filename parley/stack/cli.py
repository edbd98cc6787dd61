"""The `parley` command: `dev` (everything), `gateway`, `worker`, `ingest`, `agent`, `org`,
`skill`."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import click

from parley import tracing
from parley.logs import configure_logging
from parley.settings import Settings, get_settings
from parley.storage.db import Conn
from parley.stores import StoresNotConfigured

T = TypeVar("T")


def _settings() -> Settings:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, payloads=settings.log_payloads)
    return settings


def _with_database(settings: Settings, work: Callable[[Conn], Awaitable[T]]) -> T:
    """Run `work` on a connection to the configured (or `parley dev`'s embedded) database."""
    from parley.storage import db
    from parley.stores import resolve_stores

    async def run() -> T:
        url = resolve_stores(settings).database_url
        await db.migrate(url)
        async with db.create_pool(url, max_size=1, name="cli") as pool, pool.connection() as conn:
            return await work(conn)

    try:
        return asyncio.run(run())
    except StoresNotConfigured as err:
        raise click.ClickException(str(err)) from None


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
    from parley.stack.dev import run_dev

    settings = _settings()
    _check_admin(settings)
    asyncio.run(run_dev(settings))


def _check_admin(settings: Settings) -> None:
    """Stop on admin settings the gateway would refuse (a short token, say), before
    anything starts."""
    from gateway.admin import configuration_problem

    if (problem := configuration_problem(settings)) is not None:
        raise click.ClickException(problem)


@main.command()
def gateway() -> None:
    """Serve the gateway (WebSocket /ws, /healthz, /readyz) on PARLEY_HOST:PARLEY_PORT, and
    /admin there or, with PARLEY_ADMIN_PORT set, on PARLEY_ADMIN_HOST:PARLEY_ADMIN_PORT."""
    from gateway.serve import Listeners
    from parley.stores import resolve_stores

    settings = _settings()
    _check_admin(settings)
    try:
        resolve_stores(settings)  # fail here, clearly, rather than inside uvicorn's start-up
    except StoresNotConfigured as err:
        raise click.ClickException(str(err)) from None
    Listeners(settings).run()
    # Stopped and closed. Exit now rather than through the interpreter's finalization:
    # the Temporal SDK's runtime, dropped there, waits for RPCs still in flight (a relay's
    # long-poll update lasts until the server answers it), which held a stopped gateway
    # up until an orchestrator killed it. What finalization would flush is flushed here.
    tracing.flush()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


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
@click.option(
    "--models",
    default=None,
    help="Comma-separated models a client may name in send_message (default: PARLEY_MODEL only).",
)
@click.option("--greeting", default=None, help="The widget's first words to a new visitor.")
@click.option(
    "--starter",
    "starters",
    multiple=True,
    help="A starter question the widget offers (repeat, up to 4).",
)
@click.option("--accent", default=None, help="The widget's accent colour, #rrggbb.")
def agent(
    agent_id: str,
    name: str,
    org: str | None,
    origins: tuple[str, ...],
    auth_key: str | None,
    models: str | None,
    greeting: str | None,
    starters: tuple[str, ...],
    accent: str | None,
) -> None:
    """Register (or update) an agent: its embed policy, the models clients may pick, and
    what its widget shows (running it again replaces all of these)."""
    from pydantic import ValidationError

    from parley.storage import agent_widget, sessions

    try:
        profile = agent_widget.WidgetProfile(
            greeting=greeting, starters=list(starters), accent=accent
        )
    except ValidationError as err:
        first = err.errors()[0]
        raise click.UsageError(f"--{first['loc'][0]}: {first['msg']}") from None

    async def save(conn: Conn) -> None:
        async with conn.transaction():
            await sessions.upsert_agent(
                conn,
                agent_id,
                name=name,
                org_id=org or settings.org,
                allowed_origins=list(origins) if origins or auth_key else None,
                auth_key=auth_key,
                models=list(_csv(models)) or None,
            )
            await agent_widget.set_profile(conn, agent_id, profile)

    settings = _settings()
    _with_database(settings, save)
    click.echo(f"agent {agent_id} saved")


@main.command()
@click.argument("org_id")
@click.option("--persona", default=None, help="System prompt replacing the default one.")
@click.option("--clear-persona", is_flag=True, help="Go back to the default system prompt.")
def org(org_id: str, persona: str | None, clear_persona: bool) -> None:
    """Set an organization's persona (its system prompt override)."""
    from parley.storage import organizations

    if persona is None and not clear_persona:
        raise click.UsageError("give --persona TEXT or --clear-persona")

    _with_database(
        _settings(),
        lambda conn: organizations.set_persona(conn, org_id, None if clear_persona else persona),
    )
    click.echo(f"organization {org_id} saved")


@main.group()
def skill() -> None:
    """Manage an organization's skills (send_message's `skill`)."""


@skill.command("set")
@click.argument("name")
@click.option("--org", default=None, help="Organization (default: PARLEY_ORG).")
@click.option("--prompt", default=None, help="Instructions added to the system prompt.")
@click.option(
    "--prompt-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Read the instructions from this file instead.",
)
@click.option(
    "--tools",
    default=None,
    help="Comma-separated tools the skill may use (default: all; '' for the built-in ones only).",
)
def skill_set(
    name: str, org: str | None, prompt: str | None, prompt_file: Path | None, tools: str | None
) -> None:
    """Create or replace the skill NAME."""
    from parley import skills
    from parley.storage import skills as store

    if prompt_file is not None and prompt is None:
        text = prompt_file.read_text()
    elif prompt is not None and prompt_file is None:
        text = prompt
    else:
        raise click.UsageError("give --prompt TEXT or --prompt-file PATH")
    allowed = None if tools is None else _csv(tools)
    problem = _skill_problem(name, text, allowed)
    if problem is not None:
        raise click.UsageError(problem)
    settings = _settings()
    org_id = org or settings.org
    created = _with_database(
        settings, lambda conn: store.save(conn, org_id, skills.Skill(name, text, allowed))
    )
    click.echo(f"skill {name} {'created' if created else 'replaced'} in organization {org_id}")


def _skill_problem(name: str, prompt: str, tools: tuple[str, ...] | None) -> str | None:
    from parley import skills

    if not skills.valid_name(name):
        return "a skill name is 1 to 128 letters, digits, '_' or '-'"
    if not prompt.strip() or len(prompt) > skills.MAX_PROMPT_CHARS:
        return f"the prompt must be 1 to {skills.MAX_PROMPT_CHARS} characters"
    if tools is not None and (
        len(tools) > skills.MAX_TOOLS or not all(skills.valid_name(t) for t in tools)
    ):
        return f"--tools takes at most {skills.MAX_TOOLS} tool names"
    return None


@skill.command("list")
@click.option("--org", default=None, help="Organization (default: PARLEY_ORG).")
def skill_list(org: str | None) -> None:
    """List the organization's skills and the tools each may use."""
    from parley.storage import skills as store

    settings = _settings()
    found = _with_database(settings, lambda conn: store.list_skills(conn, org or settings.org))
    for s in found:
        tools = "all tools" if s.tools is None else ", ".join(s.tools) or "built-in tools only"
        click.echo(f"{s.name}\t{tools}")


@skill.command("delete")
@click.argument("name")
@click.option("--org", default=None, help="Organization (default: PARLEY_ORG).")
def skill_delete(name: str, org: str | None) -> None:
    """Delete the skill NAME (turns that name it then get SKILL_NOT_FOUND)."""
    from parley.storage import skills as store

    settings = _settings()
    org_id = org or settings.org
    if not _with_database(settings, lambda conn: store.delete(conn, org_id, name)):
        raise click.ClickException(f"no skill {name!r} in organization {org_id}")
    click.echo(f"skill {name} deleted")


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--org", default=None, help="Organization (default: PARLEY_ORG).")
@click.option("--public", "public", is_flag=True, help="Anyone may read these (the default).")
@click.option("--users", default=None, help="Comma-separated user ids who may read these.")
@click.option("--groups", default=None, help="Comma-separated groups whose members may read.")
def ingest(
    paths: tuple[Path, ...], org: str | None, public: bool, users: str | None, groups: str | None
) -> None:
    """Add files or folders (Markdown, text, HTML, PDF) to the knowledge base.

    A document's id and source are its path relative to the folder given (a file given
    directly: its file name). Unchanged files are skipped; changed ones replaced.
    """
    from parley.knowledge.embeddings import load_embedder
    from parley.knowledge.ingest import Summary, discover, ingest_files
    from parley.knowledge.types import Access

    if public and (users or groups):
        raise click.UsageError("--public cannot be combined with --users/--groups")
    access = Access(public=not (users or groups), users=_csv(users), groups=_csv(groups))
    settings = _settings()
    try:
        files = discover(paths)
    except FileNotFoundError as err:
        raise click.ClickException(str(err)) from None
    org_id = org or settings.org
    readers = (
        "everyone"
        if access.public
        else ", ".join([f"user {u}" for u in access.users] + [f"group {g}" for g in access.groups])
    )
    click.echo(f"Ingesting {len(files)} files into organization {org_id!r}, readable by {readers}")

    async def work(conn: Conn) -> Summary:
        with click.progressbar(length=len(files), label="Documents", show_pos=True) as bar:
            return await ingest_files(
                conn,
                files,
                org_id=org_id,
                access=access,
                progress=bar.update,
                embedder=load_embedder(settings.embeddings),
            )

    summary = _with_database(settings, work)
    click.echo(summary.line())
    for doc_id in summary.failed:
        click.echo(f"  could not read: {doc_id}", err=True)
    if summary.failed:
        raise SystemExit(1)
