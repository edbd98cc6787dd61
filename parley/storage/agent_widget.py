"""An agent's widget profile: its greeting, starter questions and accent colour."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from pydantic.dataclasses import dataclass

from parley.storage.db import Conn

MAX_GREETING = 500
MAX_STARTERS = 4
MAX_STARTER = 120


@dataclass(frozen=True)
class WidgetProfile:
    """Validated on construction (CLI and admin API alike): it is shown on customers' sites."""

    greeting: Annotated[str, Field(min_length=1, max_length=MAX_GREETING)] | None = None
    starters: list[Annotated[str, Field(min_length=1, max_length=MAX_STARTER)]] = Field(
        default_factory=list, max_length=MAX_STARTERS
    )
    accent: Annotated[str, Field(pattern=r"^#[0-9a-fA-F]{6}$")] | None = None


async def set_profile(conn: Conn, agent_id: str, profile: WidgetProfile) -> None:
    """Replace the agent's profile (the agent must be registered)."""
    await conn.execute(
        "insert into agent_widget (agent_id, greeting, starters, accent) values (%s, %s, %s, %s)"
        " on conflict (agent_id) do update set greeting = excluded.greeting,"
        " starters = excluded.starters, accent = excluded.accent, updated_at = now()",
        (agent_id, profile.greeting, profile.starters, profile.accent),
    )


async def profile(conn: Conn, agent_id: str) -> WidgetProfile:
    """The agent's profile; an empty one when it has none."""
    cur = await conn.execute(
        "select greeting, starters, accent from agent_widget where agent_id = %s", (agent_id,)
    )
    row = await cur.fetchone()
    if row is None:
        return WidgetProfile()
    return WidgetProfile(row["greeting"], list(row["starters"]), row["accent"])
