"""Signed webhooks: how Parley signs an announcement, and how a receiver checks it.

Every POST carries `X-Parley-Signature: t=<unix seconds>,v1=<hex>`, where `v1` is
HMAC-SHA256 over `"<t>." + body` (the raw bytes) with the organization's secret. A receiver
recomputes it, compares in constant time, and refuses a timestamp older than it tolerates
(replays): `verify(secret, header, body)` does all three.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

SIGNATURE_HEADER = "X-Parley-Signature"
EVENT_HEADER = "X-Parley-Event"
DELIVERY_HEADER = "X-Parley-Delivery"
DEFAULT_TOLERANCE_SECONDS = 300


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return mac.hexdigest()


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The `X-Parley-Signature` header's value for `body`, now (or at `timestamp`)."""
    stamp = int(time.time()) if timestamp is None else timestamp
    return f"t={stamp},v1={signature(secret, stamp, body)}"


def verify(
    secret: str,
    header: str,
    body: bytes,
    *,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
    now: int | None = None,
) -> bool:
    """Whether `header` signs `body` with `secret`, within `tolerance` seconds of now."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    stamp, given = fields.get("t", ""), fields.get("v1", "")
    # A hostile header is False, never an exception (non-ASCII digits, a non-ASCII MAC).
    if not (stamp.isascii() and stamp.isdigit()) or not given or not given.isascii():
        return False
    current = int(time.time()) if now is None else now
    if abs(current - int(stamp)) > tolerance:
        return False
    return hmac.compare_digest(signature(secret, int(stamp), body).encode(), given.encode())


@dataclass
class NoticeInput:
    """One announcement of one approval: `event` is requested, decided or expired."""

    approval_id: str
    event: str


def notice_id(approval_id: str, event: str) -> str:
    """The announcement's workflow id and delivery id: one per approval and event, so a
    retried activity that starts it twice announces it once."""
    return f"approval-notice-{approval_id}-{event}"


class PrivateAddress(ValueError):
    """A webhook URL that reaches this network's own hosts (loopback, private, link-local)."""


async def check_public(url: str) -> None:
    """Refuse a URL whose host resolves to a non-public address: an organization's admin
    sets the webhook, and the worker must not become their way into the operator's network
    (PARLEY_WEBHOOK_ALLOW_PRIVATE lifts this for a private deployment). The name is
    resolved here and again by the HTTP client, so a rebinding DNS server could still win
    that race; a firewall on the worker's egress is the complete answer."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PrivateAddress("the webhook URL must be http(s) with a host")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    infos = await asyncio.get_running_loop().getaddrinfo(parts.hostname, port)
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(sockaddr[0])
        if not address.is_global or address.is_multicast or _translated(address):
            raise PrivateAddress(f"the webhook host resolves to a non-public address ({address})")


# IPv6 prefixes that carry an IPv4 address on to an IPv4 network (NAT64, 6to4): Python calls
# them global, but `64:ff9b::a9fe:a9fe` reaches 169.254.169.254 through a NAT64 gateway.
_TRANSLATED = [ipaddress.ip_network(n) for n in ("64:ff9b::/96", "64:ff9b:1::/48", "2002::/16")]


def _translated(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return address.version == 6 and any(address in net for net in _TRANSLATED)
