"""Optional encryption of Temporal payloads: AES-256-GCM, with key ids for rotation.

With `PARLEY_PAYLOAD_KEYS` set, every payload a gateway or worker hands Temporal (workflow
and activity inputs and results, signals, updates, queries, stream batches, timer summaries,
and failure messages and stack traces: see `parley.temporal_client.data_converter`) is
stored as ciphertext, so Temporal's server, its database and its UI never see a user's text.
Operators who hold the key read histories through the gateway's codec endpoint
(`gateway/codec.py`).

An encrypted payload:

    metadata  encoding: binary/encrypted, encryption-key-id: <key id>
    data      nonce (12 random bytes) || AES-GCM(key, nonce, original Payload serialized)

The original payload (its metadata too) is the plaintext, so decoding gives it back whole.
`PARLEY_PAYLOAD_KEYS` is `kid:base64key[,kid:base64key...]`: the first key encrypts, every
key decrypts, so a payload stays readable after its key stops being the current one.
Payloads that are not encrypted pass through decoding untouched: turning encryption on does
not break turns already running.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.message import DecodeError
from pydantic import SecretStr
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12
TAG_BYTES = 16
SETTING = "PARLEY_PAYLOAD_KEYS"

_KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_FORMAT = f"{SETTING} is `key-id:base64-key[,key-id:base64-key...]`"


class PayloadKeysError(ValueError):
    """The keys setting is malformed. The message names entries by position and key id,
    never by their key material."""


class PayloadDecryptionError(ValueError):
    """An encrypted payload could not be decrypted: its key id is unknown, or it was altered."""


@dataclass(frozen=True)
class PayloadKey:
    id: str
    secret: bytes = field(repr=False)


def parse_payload_keys(spec: str) -> tuple[PayloadKey, ...]:
    """The keys of a `kid:base64key,...` setting, the encrypting one first.

    Raises PayloadKeysError (a ValueError) naming the bad entry, never its key material.
    """
    keys: list[PayloadKey] = []
    seen: set[str] = set()
    for position, entry in enumerate(spec.split(","), start=1):
        if not entry.strip():
            continue  # a trailing comma, or one doubled: nothing there to get wrong
        kid, colon, material = (part.strip() for part in entry.partition(":"))
        if not colon or not kid:
            raise PayloadKeysError(f"{SETTING}: entry {position} has no key id; {_FORMAT}")
        if not _KEY_ID.fullmatch(kid):
            # Not echoed: a malformed entry may be key material pasted in the wrong place.
            raise PayloadKeysError(
                f"{SETTING}: entry {position} has an invalid key id (1-64 letters, digits, "
                "'.', '_' or '-', starting with a letter or digit)"
            )
        if kid in seen:
            raise PayloadKeysError(f"{SETTING}: key id {kid!r} appears more than once")
        seen.add(kid)
        try:
            secret = base64.b64decode(material, validate=True)
        except (binascii.Error, ValueError):
            raise PayloadKeysError(
                f"{SETTING}: the key of {kid!r} is not valid base64 "
                "(make one with `openssl rand -base64 32`)"
            ) from None
        if len(secret) != KEY_BYTES:
            raise PayloadKeysError(
                f"{SETTING}: the key of {kid!r} is {len(secret)} bytes; AES-256 needs "
                f"{KEY_BYTES} (make one with `openssl rand -base64 32`)"
            )
        keys.append(PayloadKey(kid, secret))
    if not keys:
        raise PayloadKeysError(f"{SETTING} names no keys (unset it to store payloads as they are)")
    return tuple(keys)


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over whole payloads; encrypts with the first key, decrypts with any."""

    def __init__(self, keys: Sequence[PayloadKey]) -> None:
        if not keys:
            raise PayloadKeysError("an encryption codec needs at least one key")
        if len({key.id for key in keys}) != len(keys):
            raise PayloadKeysError("key ids must be distinct")
        self.key_id = keys[0].id
        self._ciphers = {key.id: AESGCM(key.secret) for key in keys}

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every key id this codec decrypts, the encrypting one first."""
        return tuple(self._ciphers)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(p) for p in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self.key_id].encrypt(nonce, payload.SerializeToString(), None)
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID: self.key_id.encode()},
            data=nonce + sealed,
        )

    def decrypt(self, payload: Payload) -> Payload:
        """The original payload; one that is not encrypted is returned as it is."""
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        raw_id = payload.metadata.get(KEY_ID)
        if raw_id is None:
            raise PayloadDecryptionError(f"an encrypted payload carries no {KEY_ID}")
        kid = raw_id.decode("utf-8", "replace")[:64]
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise PayloadDecryptionError(
                f"a payload is encrypted with key id {kid!r}, which {SETTING} does not hold "
                f"(it holds {', '.join(self._ciphers)}); add that key back to read it"
            )
        data = payload.data
        if len(data) < NONCE_BYTES + TAG_BYTES:
            raise PayloadDecryptionError(
                f"a payload encrypted with key id {kid!r} is too short to be AES-GCM output"
            )
        try:
            plaintext = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], None)
        except InvalidTag:
            raise PayloadDecryptionError(
                f"a payload encrypted with key id {kid!r} failed authentication: it was "
                "altered, or the key now under that id is not the one that encrypted it"
            ) from None
        original = Payload()
        try:
            original.ParseFromString(plaintext)
        except DecodeError:
            raise PayloadDecryptionError(
                f"a payload decrypted with key id {kid!r} is not a serialized Payload"
            ) from None
        return original


def codec_for(keys: SecretStr | None) -> EncryptionCodec | None:
    """The codec for a `PARLEY_PAYLOAD_KEYS` value; None (no encryption) when unset or blank."""
    if keys is None or not keys.get_secret_value().strip():
        return None
    return EncryptionCodec(parse_payload_keys(keys.get_secret_value()))
