"""Embed policy checks for `create_conversation_session` (PROTOCOL.md §2).

An agent with a policy may only be embedded from allowed origins, and an `authContext`
presented to it must be signed with the policy's key. Both checks fail closed.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import urlsplit

from parley.protocol import AuthContext

REPLAY_WINDOW_SECONDS = 60


@dataclass(frozen=True)
class EmbedPolicy:
    allowed_origins: list[str]
    auth_key: str | None


def origin_allowed(patterns: list[str], origin: str | None) -> bool:
    """Match `origin` against `*`, an exact origin, or `scheme://*.suffix` (apex included)."""
    if not origin or not patterns:
        return False
    origin = origin.rstrip("/").lower()
    parts = urlsplit(origin)
    for pattern in patterns:
        pattern = pattern.strip().rstrip("/").lower()
        if pattern == "*" or pattern == origin:
            return True
        scheme, sep, host_pattern = pattern.partition("://")
        if sep and host_pattern.startswith("*.") and parts.scheme == scheme:
            suffix = host_pattern[2:]
            host = parts.netloc
            if host == suffix or host.endswith("." + suffix):
                return True
    return False


def sign_auth_context(key: str, user_id: str, timestamp: int) -> str:
    """The hex HMAC-SHA256 of `"{userId}:{timestamp}"`, as a host page's backend makes it."""
    message = f"{user_id}:{timestamp}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def verify_auth_context(key: str | None, context: AuthContext | None, now: int) -> str | None:
    """The verified user id, or None when the context is missing, stale or forged."""
    if not key or context is None:
        return None
    if abs(now - context.timestamp) > REPLAY_WINDOW_SECONDS:
        return None
    expected = sign_auth_context(key, context.user_id, context.timestamp)
    # Bytes, not str: compare_digest refuses non-ASCII strings (a hostile signature).
    if not hmac.compare_digest(expected.encode(), context.signature.lower().encode()):
        return None
    return context.user_id
