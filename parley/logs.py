"""Structured logging for every Parley process (structlog over the stdlib logger).

Library loggers (uvicorn, temporalio, psycopg) go through the same renderer, so one process
prints one consistent stream. Keys that look like secrets are masked before rendering, so a
key passed as log context never reaches the output.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_SECRET_KEYS = ("api_key", "apikey", "token", "secret", "password", "authorization", "signature")


def _mask_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if any(part in key.lower() for part in _SECRET_KEYS):
            event[key] = "***"
    return event


_TOKEN_IN_URL = re.compile(r"([?&](?:token|access_token)=)[^&\s\"']+")


def _mask_url_tokens(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """uvicorn logs a WebSocket's path with its query string, where `?token=` travels."""
    message = event.get("event")
    if isinstance(message, str) and "token=" in message:
        event["event"] = _TOKEN_IN_URL.sub(r"\1***", message)
    return event


def configure_logging(level: str = "INFO", fmt: str = "console") -> None:
    """Route structlog and stdlib logging through one renderer (`console` or `json`)."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _mask_secrets,
        _mask_url_tokens,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Per-request access lines are noise at INFO; errors still surface.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)


def session_ref(session_id: object) -> str | None:
    """A stable, non-reversible reference to a session for logs: a session id grants access
    to its conversation, so it never appears in a log line itself."""
    if not isinstance(session_id, str) or not session_id:
        return None
    return hashlib.sha256(session_id.encode()).hexdigest()[:12]


def new_reference() -> str:
    """A correlation id for an error: the wire gets it, the log line beside it the details."""
    return secrets.token_hex(4)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structured logger bound to `name`."""
    return structlog.stdlib.get_logger(name)
