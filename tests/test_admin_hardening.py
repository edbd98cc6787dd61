"""The admin API's limits: bodies capped before they are read, ids and access lists capped,
documents parsed under depth, size and time limits (a parse that runs over is killed and the
next upload gets a fresh worker), a short admin token refused at start-up, and `/admin` on a
listener of its own."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import signal
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from gateway import admin
from parley.settings import Settings
from parley.stack.processes import free_port
from tests.conftest import Processes
from tests.helpers import ADMIN_AUTH, ADMIN_TOKEN, GatewayServer, running_gateway

CAP = 16 * 1024  # small enough that a test body stays within uvicorn's read buffer


@asynccontextmanager
async def admin_gateway(settings: Settings, **limits: Any) -> AsyncIterator[GatewayServer]:
    update = {"admin_token": SecretStr(ADMIN_TOKEN), "admin_max_bytes": CAP, **limits}
    async with running_gateway(settings.model_copy(update=update)) as server:
        yield server


def org() -> str:
    return f"org-{uuid.uuid4().hex[:8]}"


async def raw_exchange(port: int, head: str, body: bytes) -> tuple[int, dict[str, Any]]:
    """Send a request's head and `body` as they are (possibly incomplete), then read the
    response: a server that waited for the rest of the body would never answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        await writer.drain()
        async with asyncio.timeout(10):
            status_line = await reader.readline()
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            payload = await reader.readexactly(int(headers["content-length"]))
    finally:
        writer.close()
    return int(status_line.split()[1]), json.loads(payload)


def upload_head(length_header: str) -> str:
    return (
        "POST /admin/documents HTTP/1.1\n"
        "Host: test\n"
        f"Authorization: Bearer {ADMIN_TOKEN}\n"
        "Content-Type: application/json\n"
        f"{length_header}\n"
    )


async def test_a_declared_length_over_the_limit_is_refused_unread(settings: Settings) -> None:
    async with admin_gateway(settings) as server:
        # 10x the limit declared, a few bytes sent: the answer cannot wait for the rest.
        head = upload_head(f"Content-Length: {CAP * 10}")
        status, body = await raw_exchange(server.port, head, b'{"id": "big.md", ')
    assert status == 413
    assert f"larger than {CAP} bytes" in body["error"]
    assert "PARLEY_ADMIN_MAX_BYTES" in body["error"]


async def test_a_chunked_body_is_cut_off_at_the_limit(settings: Settings) -> None:
    org_id = org()
    async with admin_gateway(settings) as server:
        piece = b"x" * 4096
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(CAP // 4096 + 1))
        # No Content-Length and no final chunk: only the limit can end the read.
        head = upload_head("Transfer-Encoding: chunked")
        status, body = await raw_exchange(server.port, head, chunks)
        assert status == 413 and f"larger than {CAP} bytes" in body["error"]
        async with httpx.AsyncClient(base_url=server.http_url, headers=ADMIN_AUTH) as http:
            # A body within the limit, also streamed without a length, is read whole.
            doc = {"id": "small.md", "content": "# Small\n\nFits.", "public": True, "org": org_id}

            async def stream() -> AsyncIterator[bytes]:
                yield json.dumps(doc).encode()

            created = await http.post("/admin/documents", content=stream())
            assert created.status_code == 201, created.text


async def test_ids_and_access_lists_are_capped(settings: Settings) -> None:
    org_id = org()
    long_group = "g" * (admin.MAX_ID + 1)
    async with (
        admin_gateway(settings, admin_max_bytes=1024 * 1024) as server,
        httpx.AsyncClient(base_url=server.http_url, headers=ADMIN_AUTH) as http,
    ):
        doc = {"id": "a.md", "content": "# A\n\nText.", "org": org_id, "public": True}

        async def refused(method: str, url: str, where: str, **kwargs: Any) -> None:
            response = await http.request(method, url, **kwargs)
            assert response.status_code == 400, (url, response.text)
            assert where in response.json()["error"], response.json()

        await refused(
            "POST", "/admin/documents", "id", json={**doc, "id": "d" * (admin.MAX_DOCUMENT_ID + 1)}
        )
        too_many = [f"g{i}" for i in range(admin.MAX_GROUPS + 1)]
        await refused("POST", "/admin/documents", "groups", json={**doc, "groups": too_many})
        await refused("POST", "/admin/documents", "groups.0", json={**doc, "groups": [long_group]})
        await refused("POST", "/admin/documents", "org", json={**doc, "org": "o" * 300})
        await refused(
            "PUT", f"/admin/users/{'u' * (admin.MAX_ID + 1)}/groups", "user id", json={"groups": []}
        )
        await refused("PUT", "/admin/users/carol/groups", "groups", json={"groups": too_many})
        await refused("PUT", "/admin/users/carol/groups", "groups.0", json={"groups": [long_group]})
        await refused("DELETE", "/admin/documents/" + "d" * (admin.MAX_DOCUMENT_ID + 1), "id")
        await refused("GET", "/admin/documents", "org", params={"org": "o" * 300})
        # At the caps exactly, everything is accepted.
        at_cap = [f"{i:03d}".ljust(admin.MAX_ID, "g") for i in range(admin.MAX_GROUPS)]
        groups = await http.put(
            f"/admin/users/{'u' * admin.MAX_ID}/groups", json={"groups": at_cap, "org": org_id}
        )
        assert groups.status_code == 200 and len(groups.json()["groups"]) == admin.MAX_GROUPS
        full = {**doc, "id": "d" * admin.MAX_DOCUMENT_ID, "groups": at_cap}
        assert (await http.post("/admin/documents", json=full)).status_code == 201


async def test_too_deep_or_too_many_chunks_is_refused(settings: Settings) -> None:
    org_id = org()
    async with (
        admin_gateway(settings, admin_max_bytes=1024 * 1024, admin_max_chunks=3) as server,
        httpx.AsyncClient(base_url=server.http_url, headers=ADMIN_AUTH, timeout=60) as http,
    ):
        deep = "<div>" * 1001 + "deep" + "</div>" * 1001  # the default limit is 1,000
        doc = {"id": "deep.html", "content": deep, "format": "html", "public": True, "org": org_id}
        response = await http.post("/admin/documents", json=doc)
        assert response.status_code == 413
        assert "more than 1000 deep" in response.json()["error"]
        long = "\n\n".join(f"Paragraph {i}. " + "word " * 200 for i in range(10))
        doc = {"id": "long.md", "content": long, "public": True, "org": org_id}
        response = await http.post("/admin/documents", json=doc)
        assert response.status_code == 413
        assert "the limit is 3" in response.json()["error"]
        listed = await http.get("/admin/documents", params={"org": org_id})
        assert listed.json()["documents"] == []
        ok = {"id": "ok.html", "content": "<div>" * 999 + "fine" + "</div>" * 999}
        ok |= {"format": "html", "public": True, "org": org_id}
        assert (await http.post("/admin/documents", json=ok)).status_code == 201


async def test_a_parse_over_its_time_limit_is_killed_and_the_next_upload_works(
    settings: Settings,
) -> None:
    org_id = org()
    limits = {
        "admin_max_bytes": 1024 * 1024,
        "admin_max_html_depth": 100_000,
        "admin_parse_timeout": timedelta(milliseconds=500),
    }
    async with (
        admin_gateway(settings, **limits) as server,
        httpx.AsyncClient(base_url=server.http_url, headers=ADMIN_AUTH, timeout=60) as http,
    ):
        before = set(multiprocessing.active_children())
        first = {"id": "first.md", "content": "# First\n\nFine.", "public": True, "org": org_id}
        assert (await http.post("/admin/documents", json=first)).status_code == 201
        [parser_process] = set(multiprocessing.active_children()) - before
        # Seconds of CPU to parse (nesting is quadratic), against a 0.5 s limit.
        nested = "<div>" * 8000 + "deep" + "</div>" * 8000
        slow = {"id": "slow.html", "content": nested, "format": "html", "public": True}
        response = await http.post("/admin/documents", json={**slow, "org": org_id})
        assert response.status_code == 422
        error = response.json()["error"]
        assert "longer than 0.5s" in error and "PARLEY_ADMIN_PARSE_TIMEOUT" in error
        await asyncio.to_thread(parser_process.join, 10)
        assert parser_process.exitcode == -signal.SIGKILL
        after = {"id": "after.md", "content": "# After\n\nStill works.", "public": True}
        stored = await http.post("/admin/documents", json={**after, "org": org_id})
        assert stored.status_code == 201, stored.text
        listed = await http.get("/admin/documents", params={"org": org_id})
        assert [d["id"] for d in listed.json()["documents"]] == ["after.md", "first.md"]
        assert (await http.get("/healthz")).status_code == 200


@pytest.mark.parametrize(
    "command",
    [["-m", "parley", "gateway"], ["-m", "uvicorn", "gateway.app:app", "--port", "0"]],
    ids=["parley-gateway", "uvicorn"],
)
async def test_a_short_admin_token_stops_the_gateway(
    settings: Settings, processes: Processes, command: list[str]
) -> None:
    short = "short-admin-secret-31-characters"[:31]
    env = processes.env(settings, PARLEY_ADMIN_TOKEN=short, PARLEY_PORT=str(free_port()))
    env["PARLEY_LOG_LEVEL"] = "INFO"
    gateway = processes.start("gateway", command, env, capture=True)
    async with asyncio.timeout(60):
        code = await gateway.exited()
    assert code != 0
    assert "PARLEY_ADMIN_TOKEN is shorter than 32 characters" in gateway.output
    assert short not in gateway.output


async def test_admin_on_a_listener_of_its_own(settings: Settings, processes: Processes) -> None:
    admin_port = free_port()
    gateway, port = await processes.gateway(
        settings, PARLEY_ADMIN_PORT=str(admin_port), PARLEY_ADMIN_TOKEN=ADMIN_TOKEN
    )
    org_id = org()
    doc = {"id": "kb.md", "content": "# KB\n\nText.", "public": True, "org": org_id}
    async with httpx.AsyncClient(headers=ADMIN_AUTH, timeout=30) as http:
        public, private = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}"
        assert (await http.post(f"{public}/admin/documents", json=doc)).status_code == 404
        listed = await http.get(f"{public}/admin/documents", params={"org": org_id})
        assert listed.status_code == 404
        assert (await http.get(f"{public}/readyz")).status_code == 200
        created = await http.post(f"{private}/admin/documents", json=doc)
        assert created.status_code == 201, created.text
        listed = await http.get(f"{private}/admin/documents", params={"org": org_id})
        assert [d["id"] for d in listed.json()["documents"]] == ["kb.md"]
        assert (await http.get(f"{private}/readyz")).status_code == 404  # /admin alone
        unauthorized = await http.get(f"{private}/admin/documents", headers={"Authorization": ""})
        assert unauthorized.status_code == 401
    gateway.send_signal(signal.SIGTERM)
    async with asyncio.timeout(30):
        assert await gateway.exited() == 0
