"""Structured logging for every Parley process (structlog over the stdlib logger).

Library loggers (uvicorn, temporalio, psycopg) go through the same renderer, so one process
prints one consistent stream. Keys that look like secrets are masked before rendering, so a
key passed as log context never reaches the output. While tracing is on, a line written
inside a span names its `trace_id` and `span_id`, so a trace leads to its log lines.

What people and the model say is not logged, at any level, unless `PARLEY_LOG_PAYLOADS` is
on: values under payload keys (`message`, `content`, `arguments`, ...) become
"[redacted N chars]", so do exceptions' messages in tracebacks (the frames and types stay),
and libraries' records below INFO are dropped, because at DEBUG they carry payloads whole
(the anthropic SDK its request options, Temporal activity results, uvicorn/websockets every
WebSocket frame).
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import sys
import traceback
from collections.abc import MutableMapping
from typing import Any

import structlog
from opentelemetry import trace

_SECRET_KEYS = ("api_key", "apikey", "token", "secret", "password", "authorization", "signature")

# Log keys whose values are message text, model requests and replies, or tool arguments.
PAYLOAD_KEYS = frozenset(
    {"message", "messages", "text", "prompt", "system", "content", "arguments", "input"}
    | {"token", "tokens", "delta", "query", "reply", "result", "body", "request", "response"}
)
# Loggers of Parley's own code (theirs pass, at every level, through the key redaction).
_OWN_LOGGERS = frozenset({"parley", "gateway", "activities", "workflows", "worker"})
# Libraries that log payloads at DEBUG; held at INFO so they do not even build the records.
_PAYLOAD_LIBRARIES = (
    *("anthropic", "httpx", "httpx2", "httpcore", "httpcore2"),
    *("temporalio", "websockets", "uvicorn"),
)


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


def _redact_payloads(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if key.lower() in PAYLOAD_KEYS:
            value = event[key]
            size = len(value) if isinstance(value, str | bytes) else len(str(value))
            event[key] = f"[redacted {size} chars]"
    return event


def _redact_exception_messages(
    _: Any, __: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A traceback keeps its frames and exception types; each exception's message, which
    can quote a payload (a tool's error naming its argument, a validation error its
    input), becomes a placeholder."""
    exc_info = event.get("exc_info")
    if exc_info is True:
        exc_info = sys.exc_info()
    exc = exc_info[1] if isinstance(exc_info, tuple) else exc_info
    if not isinstance(exc, BaseException):
        return event
    del event["exc_info"]
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        cause = current.__cause__
        current = cause if cause or current.__suppress_context__ else current.__context__
    lines: list[str] = []
    for error in reversed(chain):
        if lines:
            lines.append("\nwhich led to:\n\n")
        lines.append("Traceback (most recent call last):\n")
        lines.extend(traceback.format_tb(error.__traceback__))
        kind = f"{type(error).__module__}.{type(error).__qualname__}"
        lines.append(f"{kind}: [redacted {len(str(error))} chars]\n")
    event["exception"] = "".join(lines).rstrip("\n")
    return event


def _trace_context(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """The current span's trace and span ids (none outside a span, or with tracing off)."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event.setdefault("trace_id", trace.format_trace_id(context.trace_id))
        event.setdefault("span_id", trace.format_span_id(context.span_id))
    return event


class _NoLibraryDebug(logging.Filter):
    """Libraries' records below INFO are dropped: at DEBUG they carry payloads whole."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.INFO or record.name.split(".")[0] in _OWN_LOGGERS


def configure_logging(level: str = "INFO", fmt: str = "console", *, payloads: bool = False) -> None:
    """Route structlog and stdlib logging through one renderer (`console` or `json`).

    `payloads` (`PARLEY_LOG_PAYLOADS`) lets message text, model requests and replies and
    tool arguments through; off, they are redacted at every level, DEBUG included.
    """
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _trace_context,
        *([] if payloads else [_redact_payloads, _redact_exception_messages]),
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
    if not payloads:
        handler.addFilter(_NoLibraryDebug())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for library in _PAYLOAD_LIBRARIES:
        # Never below the root's level: a logger's own level would let more through.
        held = logging.NOTSET if payloads else max(logging.INFO, root.level)
        logging.getLogger(library).setLevel(held)
    # Per-request access lines are noise at INFO; errors still surface.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    for client in ("httpx", "httpx2"):  # the anthropic SDK's is httpx2
        logging.getLogger(client).setLevel(logging.WARNING)


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
