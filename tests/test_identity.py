"""Identity: JWT principals (HS256, RS256, a JWKS that rotates), what a bad token gets,
and what a principal decides (its session's organization, owner and knowledge access)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import SecretStr
from websockets.exceptions import InvalidStatus

from parley.knowledge import documents
from parley.knowledge.types import Access, Document
from parley.settings import Settings
from parley.stack.fake_anthropic import FakeAnthropic, Reply, ToolCall
from tests.helpers import GatewayServer, WsClient, kinds, run_turn, running_gateway

pytestmark = pytest.mark.usefixtures("worker")

SECRET = "identity-test-secret-of-a-decent-length"
ISSUER = "https://idp.example.test/"
AUDIENCE = "parley-chat"


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "sub": "alice",
        "org": f"org-{uuid.uuid4().hex[:8]}",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 300,
        "name": "Alice Example",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs256(**overrides: Any) -> str:
    return jwt.encode(claims(**overrides), SECRET, algorithm="HS256")


def jwt_settings(settings: Settings, **extra: Any) -> Settings:
    return settings.model_copy(
        update={
            "auth": "jwt",
            "jwt_secret": SecretStr(SECRET),
            "jwt_issuer": ISSUER,
            "jwt_audience": AUDIENCE,
            **extra,
        }
    )


@asynccontextmanager
async def connected(gateway: GatewayServer, token: str | None) -> AsyncIterator[WsClient]:
    url = gateway.ws_url + (f"?token={token}" if token else "")
    async with await WsClient.open(url) as client:
        yield client


async def session_row(pool, session_id: str) -> dict[str, Any]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "select s.owner_org, s.owner_subject, c.org_id, u.external_id, u.name"
            " from sessions s join conversations c on c.id = s.conversation_id"
            " join participants u on u.id = s.user_participant_id where s.id = %s",
            (session_id,),
        )
        row = await cur.fetchone()
    assert row is not None
    return row


async def refused_with(url: str) -> int:
    with pytest.raises(InvalidStatus) as refused:
        await WsClient.open(url)
    return refused.value.response.status_code


async def test_hs256_principal_owns_its_session_and_sets_its_org(settings, pool) -> None:
    token_claims = claims(role="customer")
    token = jwt.encode(token_claims, SECRET, algorithm="HS256")
    async with (
        running_gateway(jwt_settings(settings)) as gateway,
        connected(gateway, token) as alice,
    ):
        session = await alice.create_session("support", userName="spoofed name")
        row = await session_row(pool, session["sessionId"])
        assert row == {
            "owner_org": token_claims["org"],
            "owner_subject": "alice",
            "org_id": token_claims["org"],
            "external_id": "alice",  # the knowledge requester
            "name": "Alice Example",  # the token's name, not the client's
        }
        # A second tab of the same principal (a fresh token) may use it.
        again = jwt.encode({**token_claims, "iat": token_claims["iat"] + 1}, SECRET, "HS256")
        async with connected(gateway, again) as tab:
            reply = await tab.request(
                {"action": "get_session", "requestId": "g", "sessionId": session["sessionId"]}
            )
        assert reply["type"] == "immediate_response" and reply["status"] == 200


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(lambda: hs256(exp=int(time.time()) - 120), id="expired"),
        pytest.param(lambda: hs256(nbf=int(time.time()) + 600), id="not-yet-valid"),
        pytest.param(lambda: hs256(aud="someone-else"), id="wrong-audience"),
        pytest.param(lambda: hs256(iss="https://evil.example/"), id="wrong-issuer"),
        pytest.param(lambda: hs256(org=None), id="missing-org"),
        pytest.param(lambda: hs256(sub=None), id="missing-sub"),
        pytest.param(lambda: hs256(exp=None), id="missing-exp"),
        pytest.param(
            lambda: jwt.encode(claims(), "another-secret-entirely-0123456789", "HS256"),
            id="forged",
        ),
        pytest.param(lambda: jwt.encode(claims(), None, algorithm="none"), id="alg-none"),
        pytest.param(lambda: "not.a.jwt", id="garbage"),
    ],
)
async def test_a_bad_token_is_anonymous_or_refused_in_strict_mode(settings, pool, bad) -> None:
    token = bad()
    async with running_gateway(jwt_settings(settings)) as gateway:
        async with connected(gateway, token) as visitor:
            session = await visitor.create_session("support")
        row = await session_row(pool, session["sessionId"])
        assert row["owner_subject"] is None and row["external_id"] is None  # anonymous
    async with running_gateway(jwt_settings(settings, auth_strict=True)) as strict:
        assert await refused_with(f"{strict.ws_url}?token={token}") == 401


async def test_strict_mode_refuses_no_token_and_admits_a_good_one(settings) -> None:
    async with running_gateway(jwt_settings(settings, auth_strict=True)) as gateway:
        assert await refused_with(gateway.ws_url) == 401
        async with connected(gateway, hs256()) as alice:
            assert (await alice.create_session("support"))["sessionId"]


def _pem(private_key: Any) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


async def test_rs256_with_a_public_key(settings, pool) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(claims(sub="rsa-user"), key, algorithm="RS256")
    # An HS256 token "signed" with the public key itself must not pass (key confusion).
    public_pem = _pem(key)
    async with running_gateway(
        jwt_settings(settings, jwt_secret=None, jwt_public_key=public_pem, auth_strict=True)
    ) as gateway:
        async with connected(gateway, token) as client:
            session = await client.create_session("support")
        assert (await session_row(pool, session["sessionId"]))["owner_subject"] == "rsa-user"
        forged = jwt.encode(claims(), "x" * 40, algorithm="HS256")
        assert await refused_with(f"{gateway.ws_url}?token={forged}") == 401


class JwksServer:
    """A local JWKS endpoint whose key set a test can rotate; counts its fetches."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                jwks.fetches += 1
                body = json.dumps({"keys": jwks.keys}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/jwks.json"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def publish(self, kid: str, private_key: Any, alg: str) -> None:
        public = jwt.algorithms.get_default_algorithms()[alg].to_jwk(
            private_key.public_key(), as_dict=True
        )
        self.keys = [{**public, "kid": kid, "alg": alg, "use": "sig"}]

    def __enter__(self) -> JwksServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    with JwksServer() as server:
        yield server


async def test_jwks_key_rotation_by_kid(settings, pool, jwks: JwksServer) -> None:
    first = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    second = ec.generate_private_key(ec.SECP256R1())
    jwks.publish("k1", first, "RS256")
    strict = jwt_settings(
        settings, jwt_secret=None, jwt_jwks_url=jwks.url, auth_strict=True
    ).model_copy(update={"jwt_jwks_cooldown": timedelta(0)})
    old = jwt.encode(claims(sub="one"), first, algorithm="RS256", headers={"kid": "k1"})
    new = jwt.encode(claims(sub="two"), second, algorithm="ES256", headers={"kid": "k2"})
    async with running_gateway(strict) as gateway:
        async with connected(gateway, old) as client:
            assert (await client.create_session("support"))["sessionId"]
        async with connected(gateway, old) as client:  # the cached set serves the second
            assert (await client.create_session("support"))["sessionId"]
        assert jwks.fetches == 1
        jwks.publish("k2", second, "ES256")  # rotate: k1 retired, k2 (an EC key) in
        async with connected(gateway, new) as client:
            session = await client.create_session("support")
        assert (await session_row(pool, session["sessionId"]))["owner_subject"] == "two"
        assert jwks.fetches == 2  # the unknown kid refetched the set once
        assert await refused_with(f"{gateway.ws_url}?token={old}") == 401
        unknown = jwt.encode(claims(), second, algorithm="ES256", headers={"kid": "k9"})
        assert await refused_with(f"{gateway.ws_url}?token={unknown}") == 401


async def test_the_tokens_groups_decide_what_knowledge_it_reads(
    settings, pool, fake_model: FakeAnthropic
) -> None:
    org_id = f"org-{uuid.uuid4().hex[:8]}"
    async with pool.connection() as conn:
        await documents.upsert_document(
            conn,
            org_id,
            Document(
                "bands.md",
                "Bands",
                "bands.md",
                "# Salary bands\n\nThe finance salary bands were revised in March.",
                Access(groups=("finance",)),
            ),
        )
    search = ToolCall("knowledge_search", {"query": "salary bands", "limit": 5})
    found = {}
    async with running_gateway(jwt_settings(settings)) as gateway:
        for groups in (["finance"], ["support"]):
            fake_model.reset()
            fake_model.enqueue(Reply(tool_calls=[search]), Reply(text="Done."))
            token = hs256(org=org_id, sub="carol", groups=groups)
            async with connected(gateway, token) as client:
                session = await client.create_session("support")
                events = await run_turn(client, session["sessionId"], "salary bands?", "g")
            result = next(e for e in events if kinds([e]) == ["chunk:toolResult"])
            found[groups[0]] = "bands.md" in json.dumps(result)
    assert found == {"finance": True, "support": False}


async def test_a_principal_cannot_use_another_orgs_agent(settings, pool) -> None:
    from parley.storage import sessions

    async with pool.connection() as conn:
        await sessions.upsert_agent(conn, "acme-bot", name="Acme", org_id="acme")
    async with running_gateway(jwt_settings(settings)) as gateway:
        async with connected(gateway, hs256(org="globex")) as client:
            event = await client.request(
                {"action": "create_conversation_session", "requestId": "c", "agentId": "acme-bot"}
            )
        assert event["type"] == "error" and event["error"]["code"] == "AGENT_NOT_AUTHORIZED"
        async with connected(gateway, hs256(org="acme")) as client:
            assert (await client.create_session("acme-bot"))["sessionId"]


async def test_the_admin_api_takes_a_jwt_with_the_admin_role(settings) -> None:
    """No static admin token configured: an admin-role JWT manages its own organization
    only; another role, or a bad token, is 401."""
    import httpx

    org_id = f"org-{uuid.uuid4().hex[:8]}"
    async with (
        running_gateway(jwt_settings(settings, admin_token=None)) as gateway,
        httpx.AsyncClient(base_url=gateway.http_url) as http,
    ):

        def bearer(token: str) -> dict[str, str]:
            return {"authorization": f"Bearer {token}"}

        admin = hs256(org=org_id, role=["agent", "admin"])
        own = await http.get("/admin/documents", headers=bearer(admin))
        assert own.status_code == 200 and own.json()["org"] == org_id
        other = await http.get("/admin/documents?org=elsewhere", headers=bearer(admin))
        assert other.status_code == 403
        customer = await http.get("/admin/documents", headers=bearer(hs256(org=org_id)))
        expired = hs256(org=org_id, role="admin", exp=int(time.time()) - 120)
        stale = await http.get("/admin/documents", headers=bearer(expired))
        assert customer.status_code == stale.status_code == 401


async def test_each_organization_runs_on_its_own_model_key(
    isolated_settings, fake_model: FakeAnthropic
) -> None:
    """PARLEY_MODEL_KEY_RESOLVER: the worker calls the model with the organization's key,
    and the gateway refuses a turn at once for an organization that has none."""
    from tests.helpers import running_worker

    resolved = jwt_settings(
        isolated_settings, model_key_resolver="tests.tools_for_tests:model_key_for"
    )
    org_id = f"org-{uuid.uuid4().hex[:8]}"
    async with running_worker(resolved), running_gateway(resolved) as gateway:
        fake_model.enqueue(Reply(text="On your key."))
        async with connected(gateway, hs256(org=org_id)) as client:
            session = await client.create_session("support")
            events = await run_turn(client, session["sessionId"], "hi", "k")
        assert events[-1]["type"] == "eventual_response"
        [request] = fake_model.requests
        sent = request.headers.get("x-api-key") or request.headers["authorization"]
        assert sent.removeprefix("Bearer ") == f"key-for-{org_id}"
        async with connected(gateway, hs256(org=f"keyless-{org_id}")) as client:
            session = await client.create_session("support")
            refused = await client.request(
                {
                    "action": "send_message",
                    "requestId": "n",
                    "sessionId": session["sessionId"],
                    "message": "hi",
                }
            )
        assert refused["type"] == "error" and refused["error"]["code"] == "LLM_UNAVAILABLE"
        assert len(fake_model.requests) == 1
