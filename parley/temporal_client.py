"""Connecting to Temporal: the payload converter's type-hint lookups memoized, and payloads
encrypted when `PARLEY_PAYLOAD_KEYS` is set.

Temporal's JSON converter turns every decoded dict into its dataclass through
`typing.get_type_hints(cls)`, which re-evaluates the class's string annotations on each
call. A streaming turn decodes hundreds of small dataclasses (stream items on the gateway,
publish batches in the workflow), and those lookups were ~40% of a busy gateway's CPU.
A class's hints do not change after import, so one lookup per class is enough: the
converter module's `get_type_hints` is replaced by a memoized one, once per process.

Every Temporal client Parley makes for turns goes through `connect` (or `data_converter`),
so gateways and workers encrypt and decrypt with the same keys (`parley/payload_codec.py`),
and, while tracing is on, carry the tracing interceptor (`parley/tracing.py`).

How to reach the server is Temporal's standard environment configuration
(`temporalio.envconfig`): `TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`, `TEMPORAL_API_KEY`,
`TEMPORAL_TLS_*`, `TEMPORAL_GRPC_META_*`, and a profile (`TEMPORAL_PROFILE`) of a TOML file
(`TEMPORAL_CONFIG_FILE`, default `~/.config/temporalio/temporal.toml`), as the `temporal`
CLI reads them; so a Temporal Cloud namespace needs no Parley-specific settings.
"""

from __future__ import annotations

import dataclasses
import functools

from pydantic import SecretStr
from temporalio.client import Client
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    _payload_converter,
)
from temporalio.envconfig import ClientConfig, ClientConnectConfig

from parley import tracing
from parley.logs import get_logger
from parley.payload_codec import EncryptionCodec, codec_for

log = get_logger(__name__)


def memoize_type_hints() -> None:
    """Make the converter resolve each class's type hints once (idempotent)."""
    current = _payload_converter.get_type_hints
    if not hasattr(current, "cache_info"):
        _payload_converter.get_type_hints = functools.cache(current)  # type: ignore[assignment]


def data_converter(payload_keys: SecretStr | None) -> DataConverter:
    """The converter of every Parley client: the default one, with memoized type hints;
    with keys, payloads are encrypted (see `_encrypting`)."""
    return _encrypting(codec_for(payload_keys))


def _encrypting(codec: EncryptionCodec | None) -> DataConverter:
    """The default converter, with `codec` when there is one, and then failures' messages
    and stack traces encrypted too (Temporal otherwise stores them as plain text)."""
    memoize_type_hints()
    if codec is None:
        return DataConverter.default
    return dataclasses.replace(
        DataConverter.default,
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


def configured_address() -> str | None:
    """The frontend the environment configuration names (the variables or a profile)."""
    return ClientConfig.load_client_connect_config().get("target_host")


def connect_config(address: str, namespace: str) -> ClientConnectConfig:
    """The environment configuration's options (API key, TLS, gRPC metadata, profile), with
    `address` (resolved by `parley.stores`, perhaps the embedded server's) and, when the
    configuration names none, `namespace`."""
    config = ClientConfig.load_client_connect_config()
    config["target_host"] = address
    config.setdefault("namespace", namespace)
    return config


async def connect(
    address: str, namespace: str, *, payload_keys: SecretStr | None, lazy: bool = False
) -> Client:
    """A Temporal client for the gateway or the worker. `payload_keys` is required so no
    caller forgets it: pass `settings.payload_keys` (None only where nothing is encrypted)."""
    codec = codec_for(payload_keys)
    if codec is not None:
        log.info("temporal payloads encrypted", key_id=codec.key_id, decrypts=list(codec.key_ids))
    config = connect_config(address, namespace)
    log.info(
        "temporal client",
        address=config["target_host"],
        namespace=config["namespace"],
        tls=bool(config.get("tls")),
        api_key="api_key" in config,
    )
    return await Client.connect(
        **config,
        lazy=lazy,
        data_converter=_encrypting(codec),
        interceptors=tracing.temporal_interceptors(),
    )
