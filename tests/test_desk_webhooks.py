"""Approval announcements: a signed POST to the organization's webhook when an approval is
requested, decided and expired, delivered by a Temporal workflow that retries a failing
receiver with backoff while the turn goes on."""

from __future__ import annotations

import asyncio
import json
import queue
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from parley import webhooks
from parley.settings import Settings
from parley.stack.fake_anthropic import FakeAnthropic
from tests.certificates import local_certificates
from tests.helpers import GatewayServer, collapse, is_terminal, kinds, running_gateway
from tests.test_desk import RESUMED, desk, desk_token, park, park_hasty, row
from tests.test_desk import desk_gateway as desk_gateway
from tests.test_desk import org as org
from tests.test_identity import hs256, jwt_settings

pytestmark = pytest.mark.usefixtures("worker")

SECRET = "whsec-" + "k" * 40


class Receiver:
    """A local webhook receiver: answers each POST with the next scripted status (then
    200), and queues (status answered, headers, raw body)."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.received: queue.Queue[tuple[int, dict[str, str], bytes]] = queue.Queue()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                receiver.received.put((status, dict(self.headers.items()), body))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    async def next(self, timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
        return await asyncio.to_thread(self.received.get, True, timeout)

    async def until(self, event: str, timeout: float = 30) -> list[tuple[int, dict, dict]]:
        """Every POST up to the first one of `event` that was answered 200."""
        seen = []
        async with asyncio.timeout(timeout):
            while True:
                status, headers, body = await self.next(timeout)
                seen.append((status, headers, json.loads(body)))
                assert webhooks.verify(SECRET, headers["X-Parley-Signature"], body)
                if status == 200 and headers["X-Parley-Event"] == event:
                    return seen

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver([500])  # the first POST fails: it is retried
    yield r
    r.close()


async def configure(gateway: GatewayServer, org: str, url: str) -> None:
    headers = {"Authorization": f"Bearer {hs256(sub='boss', org=org, role='admin')}"}
    async with httpx.AsyncClient(base_url=gateway.http_url, headers=headers) as http:
        short = await http.put("/admin/webhook", json={"url": url, "secret": "short"})
        assert short.status_code == 400
        done = await http.put("/admin/webhook", json={"url": url, "secret": SECRET})
        assert done.status_code == 200, done.text
        shown = (await http.get("/admin/webhook")).json()
        assert shown == {"org": org, "url": url}  # the secret is never shown


async def test_an_admin_hears_at_once_that_a_private_webhook_url_is_refused(
    settings: Settings, org: str
) -> None:
    strict = jwt_settings(settings).model_copy(update={"webhook_allow_private": False})
    headers = {"Authorization": f"Bearer {hs256(sub='boss', org=org, role='admin')}"}
    async with (
        running_gateway(strict) as gateway,
        httpx.AsyncClient(base_url=gateway.http_url, headers=headers) as http,
    ):
        for url, reason in (
            ("http://127.0.0.1:9/hook", "non-public address (127.0.0.1)"),
            ("https://no-such-host.invalid/hook", "does not resolve"),
        ):
            refused = await http.put("/admin/webhook", json={"url": url, "secret": SECRET})
            assert refused.status_code == 400 and reason in refused.json()["error"], refused.text
        assert (await http.get("/admin/webhook")).status_code == 404  # nothing was stored
        public = "https://93.184.216.34/hook"
        assert (await http.put("/admin/webhook", json={"url": public, "secret": SECRET})).is_success


def test_signatures_bind_the_body_and_the_time() -> None:
    body = b'{"a":1}'
    header = webhooks.sign(SECRET, body, timestamp=1_000_000)
    assert webhooks.verify(SECRET, header, body, now=1_000_010)
    assert not webhooks.verify(SECRET, header, b'{"a":2}', now=1_000_010)
    assert not webhooks.verify("another-secret", header, body, now=1_000_010)
    assert not webhooks.verify(SECRET, header, body, now=1_000_000 + 3600)  # replayed late
    assert not webhooks.verify(SECRET, "t=x,v1=", body)


async def test_requested_and_decided_are_announced_signed_and_retried(
    desk_gateway: GatewayServer,
    fake_model: FakeAnthropic,
    org: str,
    receiver: Receiver,
    pool,
) -> None:
    await configure(desk_gateway, org, receiver.url)
    # The turn parks while the receiver fails: the announcement does not hold it up.
    client, session_id, _ = await park(desk_gateway, org, fake_model, "Refund issued.")
    asked = await row(pool, session_id)
    requested = await receiver.until("approval.requested")
    # Refused once (500), then delivered again: the same delivery, signed each time.
    assert [status for status, _, _ in requested] == [500, 200]
    first, second = (body for _, _, body in requested)
    assert first["id"] == second["id"] == f"approval-notice-{asked['id']}-requested"
    assert second["type"] == "approval.requested" and second["org"] == org
    assert second["approval"]["tool"] == "team_refund"
    assert second["approval"]["arguments"] == {"order_id": "ORD-77", "amount": 120}
    assert "sessionId" not in json.dumps(second) and session_id not in json.dumps(second)

    async with desk(desk_gateway.http_url, desk_token(org)) as http:
        decided = await http.post(
            f"/api/approvals/{asked['id']}/decision",
            json={
                "approved": True,
                "arguments": {"order_id": "ORD-77", "amount": 60},
                "note": "ok",
            },
        )
        assert decided.status_code == 200
    events = await client.recv_until(is_terminal("t1"))
    await client.close()
    assert collapse(kinds(events)) == RESUMED
    [(_, headers, body)] = await receiver.until("approval.decided")
    assert headers["X-Parley-Delivery"] == body["id"]
    assert body["approval"]["decision"] == "approved"
    assert body["approval"]["approvedArguments"] == {"order_id": "ORD-77", "amount": 60}
    assert body["approval"]["decidedBy"].startswith("sam ") and body["approval"]["note"] == "ok"
    assert body["approval"]["decisionHash"] == decided.json()["decisionHash"]


async def test_an_expiry_is_announced_as_an_expiry(
    desk_gateway: GatewayServer,
    fake_model: FakeAnthropic,
    org: str,
    pool,
) -> None:
    receiver = Receiver([])
    try:
        await configure(desk_gateway, org, receiver.url)
        client, session_id = await park_hasty(desk_gateway, org, fake_model)
        await client.recv_until(is_terminal("h1"), timeout=60)
        await client.close()
        seen = await receiver.until("approval.expired")
        types = [body["type"] for _, _, body in seen]
        assert types == ["approval.requested", "approval.expired"]
        assert seen[-1][2]["approval"]["decision"] == "expired"
        assert seen[-1][2]["approval"]["decidedBy"] == "timeout"
    finally:
        receiver.close()
    assert (await row(pool, session_id))["decision"] == "expired"


async def test_a_receiver_that_always_refuses_does_not_hold_the_turn(
    desk_gateway: GatewayServer,
    fake_model: FakeAnthropic,
    org: str,
    pool,
) -> None:
    receiver = Receiver([503] * 100)  # always refuses
    try:
        await configure(desk_gateway, org, receiver.url)
        client, session_id, _ = await park(desk_gateway, org, fake_model, "Done.")
        asked = await row(pool, session_id)
        async with desk(desk_gateway.http_url, desk_token(org)) as http:
            decided = await http.post(
                f"/api/approvals/{asked['id']}/decision", json={"approved": False}
            )
            assert decided.status_code == 200
        events = await client.recv_until(is_terminal("t1"))
        await client.close()
        assert collapse(kinds(events)) == RESUMED
        # The receiver was tried (and refused), and the turn finished all the same.
        status, _, _ = await receiver.next()
        assert status == 503
    finally:
        receiver.close()


@pytest.mark.parametrize(
    ("url", "public"),
    [
        ("http://127.0.0.1:9/hook", False),
        ("http://localhost/hook", False),
        ("https://10.1.2.3/hook", False),
        ("http://169.254.169.254/latest/meta-data", False),  # a cloud metadata service
        ("http://[::1]:8080/hook", False),
        ("http://[64:ff9b::a9fe:a9fe]/", False),  # NAT64 to 169.254.169.254
        ("http://[2002:a9fe:a9fe::1]/", False),  # 6to4 likewise
        ("ftp://93.184.216.34/hook", False),
        ("https://93.184.216.34/hook", True),
    ],
)
async def test_a_webhook_must_reach_a_public_address(url: str, public: bool) -> None:
    """Unless PARLEY_WEBHOOK_ALLOW_PRIVATE, the worker refuses (for good, no retries) to
    POST to this network's own hosts: an organization's admin sets the URL."""
    if public:
        await webhooks.resolve(url)
    else:
        with pytest.raises(webhooks.PrivateAddress):
            await webhooks.resolve(url)


async def test_a_delivery_connects_to_the_address_that_was_checked(tmp_path: Path) -> None:
    """The name is resolved once: the POST goes to the vetted address (so a rebinding DNS
    server cannot swap in a private one between check and connect), with the URL's own
    Host header, and TLS still verifies the certificate against the URL's host name."""
    ca, cert, key = local_certificates(tmp_path)
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    hosts: list[str] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        hosts.extend(line[6:] for line in head.split("\r\n") if line.lower().startswith("host: "))
        writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=served)
    port = server.sockets[0].getsockname()[1]
    trusted = ssl.create_default_context(cafile=str(ca))
    async with server:
        with pytest.raises(webhooks.PrivateAddress):  # by default: refused
            await webhooks.resolve(f"https://localhost:{port}/hook")
        target = await webhooks.resolve(f"https://localhost:{port}/hook", allow_private=True)
        assert target == webhooks.Target(
            f"https://127.0.0.1:{port}/hook", f"localhost:{port}", "localhost"
        )
        answered = await webhooks.post(target, b"{}", {}, verify=trusted)
        assert answered.status_code == 204 and hosts == [f"localhost:{port}"]
        # The certificate names localhost: a target naming another host fails verification.
        other = webhooks.Target(target.url, f"example.com:{port}", "example.com")
        with pytest.raises(httpx.ConnectError):
            await webhooks.post(other, b"{}", {}, verify=trusted)
    plain = await webhooks.resolve("http://user:pw@localhost:8080/x?y=1", allow_private=True)
    assert plain.host_header == "localhost:8080" and plain.server_name is None
    assert plain.url.startswith("http://user:pw@") and plain.url.endswith(":8080/x?y=1")


@pytest.mark.parametrize("header", ["t=\u00b2,v1=abc", "t=1,v1=\u00e9", "v1=abc", "t=1", ""])
def test_a_hostile_signature_header_is_simply_false(header: str) -> None:
    assert webhooks.verify(SECRET, header, b"{}") is False
