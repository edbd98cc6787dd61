"""Decoding a WebSocket text frame, hostile by default.

Before a frame reaches a handler it must be JSON without NaN or Infinity, nested at most
`MAX_DEPTH` deep (a deeply nested frame would otherwise raise RecursionError, not a
ValueError, and drop the socket), and every string in it (keys too) free of NUL characters
and unpaired surrogates: PostgreSQL rejects the first, UTF-8 encoders the second, and both
would otherwise fail deep inside a turn instead of at the edge.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 32


class FrameError(ValueError):
    """A frame refused at the edge; `request_id` is the frame's own, when it has a clean one."""

    def __init__(self, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def decode_frame(text: str) -> Any:
    """The frame's JSON value; raises FrameError saying what is wrong with it."""
    try:
        value = json.loads(text, parse_constant=_no_constants)
    except RecursionError:
        raise FrameError("frame is nested too deeply") from None
    except ValueError as err:
        raise FrameError(f"invalid JSON frame: {err}") from None
    problem = _problem(value)
    if problem is not None:
        raw = value.get("requestId") if isinstance(value, dict) else None
        clean = isinstance(raw, str) and len(raw) <= 256 and _text_problem(raw) is None
        raise FrameError(problem, raw if clean else None)
    return value


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "contains a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains an unpaired surrogate"
    return None


def _problem(value: Any) -> str | None:
    """The first problem in `value` (iterative: depth is what is being checked)."""
    stack: list[tuple[Any, int, str]] = [(value, 0, "")]
    while stack:
        item, depth, where = stack.pop()
        if depth > MAX_DEPTH:
            return f"frame is nested more than {MAX_DEPTH} levels deep"
        if isinstance(item, str):
            problem = _text_problem(item)
            if problem is not None:
                return f"'{where or 'frame'}' {problem}"
        elif isinstance(item, dict):
            for key, child in item.items():
                path = (f"{where}.{key}" if where else key)[:80]
                problem = _text_problem(key)
                if problem is not None:
                    return f"a key in '{where or 'frame'}' {problem}"
                stack.append((child, depth + 1, path))
        elif isinstance(item, list):
            stack.extend((child, depth + 1, f"{where}[{i}]") for i, child in enumerate(item))
    return None
