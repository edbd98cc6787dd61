"""Temporal Cloud and secured clusters: Temporal's environment configuration (API key, TLS,
profiles) reaches every client Parley makes, and a TLS-only frontend is reachable."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client
from temporalio.service import TLSConfig
from temporalio.testing import WorkflowEnvironment

from parley import temporal_client
from parley.settings import Settings
from parley.stores import resolve_stores
from tests.certificates import local_certificates
from tests.helpers import running_gateway

TEMPORAL_VARS = (
    "TEMPORAL_ADDRESS",
    "TEMPORAL_NAMESPACE",
    "TEMPORAL_API_KEY",
    "TEMPORAL_PROFILE",
    "TEMPORAL_CONFIG_FILE",
    "TEMPORAL_TLS",
    "TEMPORAL_TLS_SERVER_CA_CERT_PATH",
    "TEMPORAL_TLS_SERVER_NAME",
)


@pytest.fixture(autouse=True)
def clean_temporal_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No configuration from the machine: no variables, no default profile file."""
    for name in TEMPORAL_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(tmp_path / "absent.toml"))


async def test_an_api_key_and_tls_reach_the_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEMPORAL_API_KEY", "cloud-api-key-123")
    monkeypatch.setenv("TEMPORAL_TLS_SERVER_NAME", "acme.tmprl.cloud")
    client = await temporal_client.connect(
        "127.0.0.1:1", "acme.a1b2c", payload_keys=None, lazy=True
    )
    config = client.service_client.config
    assert config.api_key == "cloud-api-key-123"
    assert isinstance(config.tls, TLSConfig) and config.tls.domain == "acme.tmprl.cloud"
    assert client.namespace == "acme.a1b2c"


async def test_a_profile_names_the_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """A Temporal Cloud profile in the standard TOML file: Parley finds the address there
    (no TEMPORAL_ADDRESS), and the namespace and key come with it."""
    profile = tmp_path / "temporal.toml"
    profile.write_text(
        "[profile.cloud]\n"
        'address = "acme.a1b2c.tmprl.cloud:7233"\n'
        'namespace = "acme.a1b2c"\n'
        'api_key = "from-the-profile"\n'
    )
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(profile))
    monkeypatch.setenv("TEMPORAL_PROFILE", "cloud")
    settings = Settings(database_url="postgresql://unused", data_dir=tmp_path)
    stores = resolve_stores(settings)
    assert stores.temporal_address == "acme.a1b2c.tmprl.cloud:7233"
    client = await temporal_client.connect(
        stores.temporal_address, settings.temporal_namespace, payload_keys=None, lazy=True
    )
    assert client.namespace == "acme.a1b2c"  # the profile's, not the default
    assert client.service_client.config.api_key == "from-the-profile"
    assert client.service_client.config.tls  # an API key implies TLS


@contextlib.asynccontextmanager
async def tls_frontend(target: str, cert: Path, key: Path) -> AsyncIterator[str]:
    """A TLS-only frontend (gRPC over HTTP/2 needs ALPN `h2`) that relays to `target`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["h2"])
    host, port = target.rsplit(":", 1)

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    server = await asyncio.start_server(relay, "127.0.0.1", 0, ssl=context)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


async def test_a_tls_only_frontend_is_reachable(
    settings: Settings,
    temporal_env: WorkflowEnvironment,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    ca, cert, key = local_certificates(tmp_path)
    target = temporal_env.client.service_client.config.target_host
    async with tls_frontend(target, cert, key) as frontend:
        with pytest.raises(RuntimeError):  # it speaks TLS only
            await Client.connect(frontend)
        monkeypatch.setenv("TEMPORAL_TLS_SERVER_CA_CERT_PATH", str(ca))
        monkeypatch.setenv("TEMPORAL_TLS_SERVER_NAME", "localhost")
        secured = settings.model_copy(update={"temporal_address": frontend})
        async with (
            running_gateway(secured) as gateway,
            httpx.AsyncClient(base_url=gateway.http_url) as http,
        ):
            ready = await http.get("/readyz")
            assert gateway.services.temporal.service_client.config.tls
            assert ready.status_code == 200, ready.text  # it reached Temporal through TLS
