"""Encrypted Temporal payloads (PARLEY_PAYLOAD_KEYS): the codec, its keys and rotation, and
the proof that matters: with the codec on, a turn's history holds no user text, while
operators with the key read it back (through the codec, the gateway's /codec endpoint and
the Temporal CLI pointed at it)."""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from pydantic import SecretStr, ValidationError
from temporalio.api.common.v1 import Payload
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowHistory
from temporalio.converter import DataConverter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from gateway.codec import MAX_BODY_BYTES
from parley import temporal_client
from parley.payload_codec import (
    ENCODING,
    KEY_ID,
    EncryptionCodec,
    PayloadDecryptionError,
    PayloadKey,
    PayloadKeysError,
    codec_for,
    parse_payload_keys,
)
from parley.settings import Settings
from parley.stack.embedded import temporal_binary
from parley.stack.fake_anthropic import FakeAnthropic, Reply, ToolCall
from parley.turn.types import turn_id
from tests.helpers import GatewayServer, WsClient, run_turn, running_gateway, running_worker
from tests.test_replay import fixture_names, load
from workflows.turn import EXPIRY_PATCH, PARAGRAPHS_PATCH, TOKEN_BUDGET_PATCH, TurnWorkflow

PATCHES = (TOKEN_BUDGET_PATCH, EXPIRY_PATCH, PARAGRAPHS_PATCH)


def new_key(kid: str) -> tuple[PayloadKey, str]:
    """A fresh key and its `kid:base64key` entry."""
    secret = os.urandom(32)
    return PayloadKey(kid, secret), f"{kid}:{base64.b64encode(secret).decode()}"


def json_payload(value: object) -> Payload:
    [payload] = DataConverter.default.payload_converter.to_payloads([value])
    return payload


def payloads_in(message: Message) -> Iterator[Payload]:
    """Every Payload anywhere in a protobuf message (fields, lists and maps, recursively)."""
    if isinstance(message, Payload):
        yield message
        return
    for field, value in message.ListFields():
        if field.type != field.TYPE_MESSAGE:
            continue
        if field.message_type.GetOptions().map_entry:
            values = list(value.values())
        elif field.is_repeated:
            values = list(value)
        else:
            values = [value]
        for item in values:
            if isinstance(item, Message):
                yield from payloads_in(item)


# -- the codec ----------------------------------------------------------------------------


async def test_round_trip() -> None:
    k1, _ = new_key("k1")
    codec = EncryptionCodec([k1])
    original = json_payload({"text": "my card number is 4111 1111 1111 1111"})
    [sealed] = await codec.encode([original])
    assert sealed.metadata["encoding"] == ENCODING
    assert sealed.metadata[KEY_ID] == b"k1"
    assert set(sealed.metadata) == {"encoding", KEY_ID}  # the original's metadata is inside
    assert b"4111" not in sealed.SerializeToString()
    assert await codec.decode([sealed]) == [original]
    # A random nonce per payload: the same payload never encrypts the same way twice.
    [again] = await codec.encode([original])
    assert again.data != sealed.data and await codec.decode([again]) == [original]


async def test_payloads_that_are_not_encrypted_pass_through() -> None:
    """Turning encryption on does not break turns whose history was written without it."""
    k1, _ = new_key("k1")
    plain = [json_payload("hello"), json_payload(None), Payload()]
    assert await EncryptionCodec([k1]).decode(plain) == plain


async def test_rotation_keeps_old_payloads_readable() -> None:
    k1, _ = new_key("k1")
    k2, _ = new_key("k2")
    original = json_payload("written before the rotation")
    [old] = await EncryptionCodec([k1]).encode([original])
    rotated = EncryptionCodec([k2, k1])  # the new key first: it encrypts; both decrypt
    assert rotated.key_id == "k2" and rotated.key_ids == ("k2", "k1")
    assert await rotated.decode([old]) == [original]
    [new] = await rotated.encode([original])
    assert new.metadata[KEY_ID] == b"k2"
    assert await rotated.decode([new]) == [original]
    with pytest.raises(PayloadDecryptionError, match="'k2'"):
        await EncryptionCodec([k1]).decode([new])  # a process not yet given k2


async def test_a_tampered_payload_fails() -> None:
    k1, _ = new_key("k1")
    codec = EncryptionCodec([k1])
    [sealed] = await codec.encode([json_payload("refund 10 EUR")])
    for position in (0, 20, len(sealed.data) - 1):  # nonce, ciphertext, tag
        tampered = Payload()
        tampered.CopyFrom(sealed)
        data = bytearray(sealed.data)
        data[position] ^= 0x01
        tampered.data = bytes(data)
        with pytest.raises(PayloadDecryptionError, match="failed authentication"):
            await codec.decode([tampered])
    truncated = Payload(metadata=dict(sealed.metadata), data=sealed.data[:20])
    with pytest.raises(PayloadDecryptionError, match="too short"):
        await codec.decode([truncated])
    # Another key under the same id: not the key that encrypted it.
    impostor, _ = new_key("k1")
    with pytest.raises(PayloadDecryptionError, match="failed authentication"):
        await EncryptionCodec([impostor]).decode([sealed])


async def test_an_unknown_key_id_fails_clearly() -> None:
    k1, _ = new_key("k1")
    k9, _ = new_key("k9")
    [sealed] = await EncryptionCodec([k9]).encode([json_payload("x")])
    with pytest.raises(PayloadDecryptionError) as caught:
        await EncryptionCodec([k1]).decode([sealed])
    message = str(caught.value)
    assert "'k9'" in message and "PARLEY_PAYLOAD_KEYS does not hold" in message
    assert "k1" in message  # what it does hold
    no_id = Payload(metadata={"encoding": ENCODING}, data=sealed.data)
    with pytest.raises(PayloadDecryptionError, match=KEY_ID):
        await EncryptionCodec([k1]).decode([no_id])


# -- the setting --------------------------------------------------------------------------


def test_keys_parse_in_order() -> None:
    k1, e1 = new_key("k1")
    k2, e2 = new_key("prod-2025.01_b")
    assert parse_payload_keys(f" {e2} , {e1},") == (k2, k1)
    assert "secret" not in repr(k1) and repr(k1.secret) not in repr(k1)


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        ("k1:{key},k1:{other}", "'k1' appears more than once"),
        ("k1:{short}", "16 bytes; AES-256 needs 32"),
        ("k1:{key}!", "not valid base64"),
        ("k1:{key_urlsafe}", "not valid base64"),
        ("{key}", "entry 1 has no key id"),
        ("k1:{key},:{other}", "entry 2 has no key id"),
        ("bad id:{key}", "entry 1 has an invalid key id"),
        (" , ", "names no keys"),
    ],
)
def test_bad_keys_fail_at_start_without_printing_them(spec: str, complaint: str) -> None:
    key = base64.b64encode(b"\xfb" * 32).decode()  # standard alphabet: has '+' and '/'
    values = {
        "key": key,
        "other": base64.b64encode(os.urandom(32)).decode(),
        "short": base64.b64encode(os.urandom(16)).decode(),
        "key_urlsafe": base64.urlsafe_b64encode(b"\xfb" * 32).decode(),
    }
    raw = spec.format(**values)
    with pytest.raises(PayloadKeysError, match=complaint) as caught:
        parse_payload_keys(raw)
    with pytest.raises(ValidationError) as at_start:
        Settings(payload_keys=raw)
    assert complaint in str(at_start.value)
    for shown in (str(caught.value), str(at_start.value), repr(at_start.value.errors())):
        for material in values.values():
            assert material[:16] not in shown


def test_unset_or_blank_keys_mean_no_encryption(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PARLEY_PAYLOAD_KEYS", raising=False)
    assert Settings().payload_keys is None
    monkeypatch.setenv("PARLEY_PAYLOAD_KEYS", "  ")
    assert Settings().payload_keys is None
    assert codec_for(None) is None and codec_for(SecretStr("")) is None
    assert temporal_client.data_converter(None) is DataConverter.default
    _, entry = new_key("k1")
    monkeypatch.setenv("PARLEY_PAYLOAD_KEYS", entry)
    converter = temporal_client.data_converter(Settings().payload_keys)
    assert isinstance(converter.payload_codec, EncryptionCodec)
    assert converter.payload_codec.key_id == "k1"


@pytest.mark.parametrize("name", fixture_names())
async def test_histories_written_without_encryption_replay_with_it(name: str) -> None:
    """Turns running when encryption is turned on keep going: a worker with keys replays
    their plain histories (plain payloads pass through the codec)."""
    _, entry = new_key("k1")
    converter = temporal_client.data_converter(SecretStr(entry))
    await Replayer(workflows=[TurnWorkflow], data_converter=converter).replay_workflow(load(name))


# -- a real turn with the codec on --------------------------------------------------------

ADMIN = "codec-admin-token-for-tests-0123456789abcdef"  # admin tokens may need 32+ chars
UI_ORIGIN = "http://temporal-ui.test:8233"


@dataclass
class EncryptedTurn:
    settings: Settings
    gateway: GatewayServer
    codec: EncryptionCodec
    workflow_id: str
    history: WorkflowHistory  # fetched by a client without the codec
    user_marker: str
    tool_marker: str
    reply_marker: str

    @property
    def markers(self) -> tuple[str, str, str]:
        return (self.user_marker, self.tool_marker, self.reply_marker)


@pytest.fixture(scope="module")
async def encrypted(
    settings: Settings, model_server: FakeAnthropic, temporal_env: WorkflowEnvironment
) -> AsyncIterator[EncryptedTurn]:
    """A gateway and a worker of their own, both with keys, and one finished turn: a user
    message, a tool call on it and a reply, each carrying a unique marker."""
    _, current = new_key("k2")
    _, older = new_key("k1")
    own = settings.model_copy(
        update={
            "task_queue": f"enc-{uuid.uuid4().hex[:8]}",
            "payload_keys": SecretStr(f"{current},{older}"),
            "admin_token": SecretStr(ADMIN),
            "codec_cors_origins": [UI_ORIGIN],
        }
    )
    user, tool, reply = (f"{what}-{uuid.uuid4().hex}" for what in ("user", "tool", "reply"))
    model_server.reset()
    model_server.enqueue(
        Reply(text="Let me look.", tool_calls=[ToolCall("order_status", {"order_id": tool})]),
        Reply(text=f"Your order is on its way ({reply})."),
    )
    try:
        async with (
            running_worker(own),
            running_gateway(own) as gateway,
            await WsClient.open(gateway.ws_url) as client,
        ):
            session = await client.create_session(str(uuid.uuid4()))
            events = await run_turn(
                client, session["sessionId"], f"Where is my order? {user}", "enc-1"
            )
            assert events[-1]["type"] == "eventual_response", events[-1]
            assert reply in events[-1]["data"]["data"]["response"]["responseParts"][0]
            workflow_id = turn_id(session["sessionId"], "enc-1")
            # The gateway's own client has the codec: it reads the result (after the linger).
            await asyncio.wait_for(
                gateway.services.temporal.get_workflow_handle(workflow_id).result(), 30
            )
            # The test environment's client has no codec: it sees what Temporal stores.
            history = await temporal_env.client.get_workflow_handle(workflow_id).fetch_history()
            codec = gateway.services.temporal.data_converter.payload_codec
            assert isinstance(codec, EncryptionCodec)
            yield EncryptedTurn(own, gateway, codec, workflow_id, history, user, tool, reply)
    finally:
        model_server.reset()


async def test_the_history_holds_no_user_text(encrypted: EncryptedTurn) -> None:
    history = encrypted.history
    stored = b"".join(event.SerializeToString() for event in history.events)
    as_json = history.to_json()
    for marker in encrypted.markers:
        assert marker.encode() not in stored
        assert marker not in as_json
    payloads = [
        p for event in history.events if not patch_marker(event) for p in payloads_in(event)
    ]
    assert len(payloads) > 10  # input, activities, signals, updates, result, ...
    unencrypted = [p for p in payloads if p.metadata.get("encoding") != ENCODING]
    assert unencrypted == []
    # `workflow.patched` leaves Temporal's bookkeeping (a marker, and the search attribute
    # the server indexes), written without the codec: the patch's name, nothing of the turn.
    for p in (p for e in history.events if patch_marker(e) for p in payloads_in(e)):
        assert len(p.data) < 100 and any(name.encode() in p.data for name in PATCHES), p
    assert {p.metadata[KEY_ID] for p in payloads} == {b"k2"}  # the first key encrypts


def patch_marker(event: HistoryEvent) -> bool:
    """A `workflow.patched` record: its marker, or its `TemporalChangeVersion` attribute."""
    if event.HasField("marker_recorded_event_attributes"):
        return event.marker_recorded_event_attributes.marker_name == "core_patch"
    if event.HasField("upsert_workflow_search_attributes_event_attributes"):
        attributes = event.upsert_workflow_search_attributes_event_attributes.search_attributes
        return set(attributes.indexed_fields) == {"TemporalChangeVersion"}
    return False


async def test_the_codec_reads_the_history_back(encrypted: EncryptedTurn) -> None:
    """The same payloads, decoded, carry the user's text (so the test above would fail with
    encryption off: the markers stand in these payloads as plain JSON)."""
    payloads = [p for event in encrypted.history.events for p in payloads_in(event)]
    decoded = await encrypted.codec.decode(payloads)
    plain = b"".join(p.SerializeToString() for p in decoded)
    for marker in encrypted.markers:
        assert marker.encode() in plain, marker


def http(encrypted: EncryptedTurn) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=encrypted.gateway.http_url, timeout=10)


AUTH = {"Authorization": f"Bearer {ADMIN}"}


def as_json(payloads: list[Payload]) -> dict:
    return {"payloads": [json_format.MessageToDict(p) for p in payloads]}


def from_json(body: dict) -> list[Payload]:
    return [json_format.ParseDict(p, Payload()) for p in body["payloads"]]


async def test_the_codec_endpoint_decodes_for_an_operator(encrypted: EncryptedTurn) -> None:
    original = json_payload({"message": encrypted.user_marker})
    [sealed] = await encrypted.codec.encode([original])
    plain_too = json_payload("not encrypted")
    async with http(encrypted) as client:
        reply = await client.post(
            "/codec/decode",
            json=as_json([sealed, plain_too]),
            headers={**AUTH, "X-Namespace": "default"},
        )
        assert reply.status_code == 200, reply.text
        assert reply.headers["content-type"] == "application/json"
        assert from_json(reply.json()) == [original, plain_too]
        # Proto JSON: metadata values and data are base64.
        first = reply.json()["payloads"][0]
        assert base64.b64decode(first["metadata"]["encoding"]) == b"json/plain"
        assert encrypted.user_marker in base64.b64decode(first["data"]).decode()

        encoded = await client.post("/codec/encode", json=as_json([original]), headers=AUTH)
        assert encoded.status_code == 200, encoded.text
        [resealed] = from_json(encoded.json())
        assert resealed.metadata["encoding"] == ENCODING
        assert encrypted.user_marker not in encoded.text
        assert await encrypted.codec.decode([resealed]) == [original]

        empty = await client.post("/codec/decode", json={"payloads": []}, headers=AUTH)
        assert empty.status_code == 200 and empty.json() == {"payloads": []}


async def test_the_codec_endpoint_needs_the_admin_token(encrypted: EncryptedTurn) -> None:
    [sealed] = await encrypted.codec.encode([json_payload(encrypted.user_marker)])
    body = as_json([sealed])
    async with http(encrypted) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": ADMIN}):
            for path in ("/codec/decode", "/codec/encode"):
                reply = await client.post(path, json=body, headers=headers)
                assert reply.status_code == 401, (path, headers, reply.text)
                assert encrypted.user_marker not in reply.text


async def declared_only(port: int, length: int) -> bytes:
    """The status line answering a POST that declares `length` bytes and sends none."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"POST /codec/decode HTTP/1.1\r\nHost: codec\r\n"
            + f"Authorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\n".encode()
            + f"Content-Length: {length}\r\n\r\n".encode()
        )
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()


async def test_the_codec_endpoint_refuses_bad_requests(encrypted: EncryptedTurn) -> None:
    [sealed] = await encrypted.codec.encode([json_payload("x")])
    tampered = Payload()
    tampered.CopyFrom(sealed)
    tampered.data = sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    async with http(encrypted) as client:
        for raw in (b"{not json", b"[]", b'{"payloads": 3}', b"\xff\xfe"):
            reply = await client.post("/codec/decode", content=raw, headers=AUTH)
            assert reply.status_code == 400, (raw, reply.text)
            assert "protobuf JSON" in reply.json()["error"]
        reply = await client.post("/codec/decode", json=as_json([tampered]), headers=AUTH)
        assert reply.status_code == 400 and "failed authentication" in reply.json()["error"]

        # Refused on its declared length, before a byte of the body is read (none is sent).
        status = await declared_only(encrypted.gateway.port, MAX_BODY_BYTES + 1)
        assert status.startswith(b"HTTP/1.1 413"), status

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length at all
            for _ in range(5):
                yield b" " * (MAX_BODY_BYTES // 4)

        reply = await client.post("/codec/decode", content=chunked(), headers=AUTH)
        assert reply.status_code == 413


async def test_the_codec_endpoint_answers_the_uis_preflight(encrypted: EncryptedTurn) -> None:
    [sealed] = await encrypted.codec.encode([json_payload("x")])
    async with http(encrypted) as client:
        preflight = await client.options(
            "/codec/decode",
            headers={
                "Origin": UI_ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type,x-namespace",
            },
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == UI_ORIGIN
        assert preflight.headers["access-control-allow-credentials"] == "true"
        assert "POST" in preflight.headers["access-control-allow-methods"]
        allowed = preflight.headers["access-control-allow-headers"].lower()
        assert {"authorization", "content-type", "x-namespace"} <= {
            h.strip() for h in allowed.split(",")
        }
        ok = await client.post(
            "/codec/decode", json=as_json([sealed]), headers={**AUTH, "Origin": UI_ORIGIN}
        )
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == UI_ORIGIN
        denied = await client.post("/codec/decode", json={}, headers={"Origin": UI_ORIGIN})
        assert denied.status_code == 401
        assert denied.headers["access-control-allow-origin"] == UI_ORIGIN  # readable by the UI

        stranger = "https://evil.example"
        preflight = await client.options(
            "/codec/decode",
            headers={"Origin": stranger, "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 403
        assert "access-control-allow-origin" not in preflight.headers
        reply = await client.post(
            "/codec/decode", json=as_json([sealed]), headers={**AUTH, "Origin": stranger}
        )
        assert reply.status_code == 403


async def test_the_temporal_cli_reads_the_history_through_the_endpoint(
    encrypted: EncryptedTurn, temporal_env: WorkflowEnvironment
) -> None:
    """Temporal's own client of the codec protocol, as an operator would run it."""
    address = temporal_env.client.service_client.config.target_host

    async def show(*codec_options: str) -> str:
        process = await asyncio.create_subprocess_exec(
            temporal_binary(),
            "workflow",
            "show",
            "--address",
            address,
            "--workflow-id",
            encrypted.workflow_id,
            "--output",
            "json",
            *codec_options,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, err.decode()
        return out.decode()

    def payloads(shown: str) -> list[Payload]:
        history = WorkflowHistory.from_json(encrypted.workflow_id, shown)
        return [p for e in history.events if not patch_marker(e) for p in payloads_in(e)]

    endpoint = f"{encrypted.gateway.http_url}/codec"
    as_stored = payloads(await show())
    assert as_stored and all(p.metadata["encoding"] == ENCODING for p in as_stored)
    decoded = payloads(await show("--codec-endpoint", endpoint, "--codec-auth", f"Bearer {ADMIN}"))
    assert len(decoded) == len(as_stored)
    assert not any(p.metadata.get("encoding") == ENCODING for p in decoded)
    plain = b"".join(p.data for p in decoded)
    for marker in encrypted.markers:
        assert marker.encode() in plain, marker


async def test_without_keys_there_is_no_codec_endpoint(settings: Settings) -> None:
    plain = settings.model_copy(update={"payload_keys": None, "admin_token": SecretStr(ADMIN)})
    async with (
        running_gateway(plain) as gateway,
        httpx.AsyncClient(base_url=gateway.http_url, timeout=10) as client,
    ):
        assert gateway.services.temporal.data_converter is DataConverter.default
        reply = await client.post("/codec/decode", json={"payloads": []}, headers=AUTH)
        assert reply.status_code == 404


async def test_an_organizations_admin_may_not_use_the_codec(settings: Settings) -> None:
    """Payloads span every organization: a JWT with the admin role (scoped to its own
    organization in the admin API) is refused here; the operators' static token is not."""
    import time

    import jwt

    secret = "codec-jwt-secret-of-a-decent-length-0123"
    _, key = new_key("k1")
    keyed = settings.model_copy(
        update={
            "payload_keys": SecretStr(key),
            "admin_token": SecretStr(ADMIN),
            "auth": "jwt",
            "jwt_secret": SecretStr(secret),
        }
    )
    claims = {"sub": "ops", "org": "acme", "role": "admin", "exp": int(time.time()) + 300}
    org_admin = {"Authorization": f"Bearer {jwt.encode(claims, secret, 'HS256')}"}
    async with (
        running_gateway(keyed) as gateway,
        httpx.AsyncClient(base_url=gateway.http_url, timeout=10) as client,
    ):
        refused = await client.post("/codec/decode", json={"payloads": []}, headers=org_admin)
        allowed = await client.post("/codec/decode", json={"payloads": []}, headers=AUTH)
    assert refused.status_code == 403 and allowed.status_code == 200
