"""Limits every gateway enforces together, in PostgreSQL: the models a client may pick,
sessions and turns per minute, and the daily token and USD budgets.

Called by the session and turn handlers before they store or start anything; a refusal is
a `ProtocolError` (`VALIDATION_ERROR`, `RATE_LIMITED` or `BUDGET_EXCEEDED`) whose message
says when to try again. The per-socket limits are in `gateway.socket_limits`.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from gateway.connection import Connection
from gateway.socket_limits import retry_hint
from parley.logs import get_logger
from parley.protocol import ErrorCode, ProtocolError
from parley.storage import rate_limits, sessions, usage
from parley.storage.db import Conn
from parley.storage.sessions import SessionRecord

log = get_logger(__name__)

MINUTE = 60.0
PRUNE_EVERY = 60.0  # seconds between one gateway's sweeps of ended rate windows

_next_prune = 0.0


async def admit_session(conn: Connection) -> None:
    """Count a new session against its address (`PARLEY_SESSIONS_PER_IP_PER_MINUTE`)."""
    settings = conn.services.settings
    windows = _windows(("sessions_per_ip", conn.client_ip, settings.sessions_per_ip_per_minute))
    if not windows:
        return
    async with conn.services.pool.connection() as db:
        refusals = await _hit(db, windows)
    if refusals:
        limit, wait = refusals[0].window.limit, refusals[0].retry_after
        raise ProtocolError(
            ErrorCode.RATE_LIMITED,
            f"too many new sessions from your address (at most {limit} per minute);"
            f" {retry_hint(wait)}",
        )


async def admit_turn(conn: Connection, session: SessionRecord, model: str | None) -> None:
    """Refuse a turn before anything is stored or started: a model the agent does not
    allow, too many turns per minute (per session, per address), or a spent daily budget."""
    settings = conn.services.settings
    windows = _windows(
        ("turns_per_session", session.id, settings.turns_per_session_per_minute),
        ("turns_per_ip", conn.client_ip, settings.turns_per_ip_per_minute),
    )
    async with conn.services.pool.connection() as db:
        if model and model != settings.model:  # none (or "") is PARLEY_MODEL
            allowed = await sessions.agent_models(db, session.agent_id) or ()
            if model not in allowed:
                raise ProtocolError(
                    ErrorCode.VALIDATION_ERROR,
                    f"model '{model}' is not available for this agent"
                    f" (allowed: {', '.join((settings.model, *allowed))})",
                )
        refusals = await _hit(db, windows)
        if refusals:
            refusal = min(refusals, key=lambda r: windows.index(r.window))  # session first
            per_session = refusal.window.name == "turns_per_session"
            where = "in this session" if per_session else "from your address"
            raise ProtocolError(
                ErrorCode.RATE_LIMITED,
                f"too many messages {where} (at most {refusal.window.limit} per minute);"
                f" {retry_hint(refusal.retry_after)}",
            )
        if _has_budget(settings.org_daily_tokens, settings.org_daily_usd) or _has_budget(
            settings.agent_daily_tokens, settings.agent_daily_usd
        ):
            org, agent = await usage.spent_today(db, session.org_id, session.agent_id)
            spent = _over_budget("org", org, settings.org_daily_tokens, settings.org_daily_usd)
            spent = spent or _over_budget(
                "agent", agent, settings.agent_daily_tokens, settings.agent_daily_usd
            )
            if spent:
                log.warning(
                    "daily budget spent", budget=spent, org=session.org_id, agent=session.agent_id
                )
                raise ProtocolError(
                    ErrorCode.BUDGET_EXCEEDED,
                    "this assistant has used up its daily budget; it resets at 00:00 UTC"
                    f" (in {_until_utc_midnight()})",
                )


def _windows(*limits: tuple[str, str, int]) -> list[rate_limits.Window]:
    """Per-minute windows of the limits that are on."""
    return [
        rate_limits.Window(name, subject, limit, MINUTE) for name, subject, limit in limits if limit
    ]


async def _hit(db: Conn, windows: list[rate_limits.Window]) -> list[rate_limits.Refusal]:
    """Count the hits; now and then (once a minute per gateway) prune ended windows."""
    global _next_prune
    refusals = await rate_limits.hit(db, windows)
    now = time.monotonic()
    if now >= _next_prune:
        _next_prune = now + PRUNE_EVERY
        await rate_limits.prune(db)
    return refusals


def _has_budget(tokens: int, usd: float) -> bool:
    return bool(tokens or usd)


def _over_budget(scope: str, spent: usage.Spent, tokens: int, usd: float) -> str | None:
    """Which of the scope's budgets is spent, for the log (None: neither)."""
    if tokens and spent.tokens >= tokens:
        return f"{scope} tokens: {spent.tokens} of {tokens}"
    if usd and spent.cost_usd >= usd:
        return f"{scope} USD: {spent.cost_usd:.4f} of {usd:.2f}"
    return None


def _until_utc_midnight(now: datetime | None = None) -> str:
    """How long until the UTC day ends, as "3 h 12 min" (or "12 min", "1 min")."""
    now = now or datetime.now(UTC)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
    minutes = max(1, -(-int((midnight - now).total_seconds()) // 60))
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"
