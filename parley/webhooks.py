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
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

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


@dataclass(frozen=True)
class Target:
    """Where one delivery goes: the URL with its host replaced by the address that was
    checked, the `Host` header and the TLS server name the original URL implies. Posting
    here connects to that address and no other, so a DNS server that answers a public
    address to the check and a private one to the connection (rebinding) gains nothing;
    TLS still verifies the certificate against the URL's host name."""

    url: str
    host_header: str
    server_name: str | None  # https only


async def resolve(url: str, *, allow_private: bool = False) -> Target:
    """The delivery target for `url`, refusing (PrivateAddress) a URL any of whose host's
    addresses is not public: an organization's admin sets the webhook, and the worker must
    not become their way into the operator's network (PARLEY_WEBHOOK_ALLOW_PRIVATE lifts
    this for a private deployment). OSError when the name does not resolve."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PrivateAddress("the webhook URL must be http(s) with a host")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    infos = await asyncio.get_running_loop().getaddrinfo(parts.hostname, port)
    addresses = [ipaddress.ip_address(sockaddr[0]) for *_, sockaddr in infos]
    if not addresses:
        raise OSError(f"{parts.hostname} has no address")
    if not allow_private:
        for address in addresses:
            if not address.is_global or address.is_multicast or _translated(address):
                raise PrivateAddress(
                    f"the webhook host resolves to a non-public address ({address})"
                )
    pinned = addresses[0]
    userinfo, _, hostport = parts.netloc.rpartition("@")
    host = f"[{pinned}]" if pinned.version == 6 else str(pinned)
    netloc = (f"{userinfo}@" if userinfo else "") + (f"{host}:{parts.port}" if parts.port else host)
    return Target(
        url=parts._replace(netloc=netloc).geturl(),
        host_header=hostport,
        server_name=parts.hostname if parts.scheme == "https" else None,
    )


async def post(
    target: Target,
    body: bytes,
    headers: dict[str, str],
    *,
    verify: ssl.SSLContext | bool = True,
) -> httpx.Response:
    """POST `body` to the target's pinned address (no redirects followed; 10 s at most
    for each of connect, write and read)."""
    extensions = {"sni_hostname": target.server_name} if target.server_name else {}
    async with httpx.AsyncClient(timeout=10.0, follow_redirects=False, verify=verify) as http:
        return await http.post(
            target.url,
            content=body,
            headers={**headers, "Host": target.host_header},
            extensions=extensions,
        )


# IPv6 prefixes that carry an IPv4 address on to an IPv4 network (NAT64, 6to4): Python calls
# them global, but `64:ff9b::a9fe:a9fe` reaches 169.254.169.254 through a NAT64 gateway.
_TRANSLATED = [ipaddress.ip_network(n) for n in ("64:ff9b::/96", "64:ff9b:1::/48", "2002::/16")]


def _translated(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return address.version == 6 and any(address in net for net in _TRANSLATED)
