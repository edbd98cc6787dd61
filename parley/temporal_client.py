"""Connecting to Temporal, with the payload converter's type-hint lookups memoized.

Temporal's JSON converter turns every decoded dict into its dataclass through
`typing.get_type_hints(cls)`, which re-evaluates the class's string annotations on each
call. A streaming turn decodes hundreds of small dataclasses (stream items on the gateway,
publish batches in the workflow), and those lookups were ~40% of a busy gateway's CPU.
A class's hints do not change after import, so one lookup per class is enough: the
converter module's `get_type_hints` is replaced by a memoized one, once per process.
"""

from __future__ import annotations

import functools

from temporalio.client import Client
from temporalio.converter import _payload_converter


def memoize_type_hints() -> None:
    """Make the converter resolve each class's type hints once (idempotent)."""
    current = _payload_converter.get_type_hints
    if not hasattr(current, "cache_info"):
        _payload_converter.get_type_hints = functools.cache(current)  # type: ignore[assignment]


async def connect(address: str, namespace: str, *, lazy: bool = False) -> Client:
    """A Temporal client for the gateway or the worker."""
    memoize_type_hints()
    return await Client.connect(address, namespace=namespace, lazy=lazy)
