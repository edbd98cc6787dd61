"""Which model API key serves an organization, and one SDK client per key.

A multi-tenant host bills and scopes each organization with its own key (a virtual key of
an LLM gateway, say): `PARLEY_MODEL_KEY_RESOLVER=module:attr` names a callable
`org_id -> key | None` (plain or async). Without one, every organization uses
`ANTHROPIC_API_KEY`. The worker asks it for each model call; the gateway asks it before it
starts a turn, so a turn its worker could not run is refused as `LLM_UNAVAILABLE` at once.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from pkgutil import resolve_name
from typing import cast

import anthropic

from parley.settings import Settings

KeyResolver = Callable[[str], str | Awaitable[str | None] | None]


class ModelKeys:
    def __init__(self, settings: Settings) -> None:
        key = settings.anthropic_api_key
        self._default = key.get_secret_value().strip() if key is not None else ""
        self._resolver: KeyResolver | None = None
        if settings.model_key_resolver:
            target = resolve_name(settings.model_key_resolver)
            if not callable(target):
                raise TypeError(
                    f"PARLEY_MODEL_KEY_RESOLVER={settings.model_key_resolver!r} is not callable"
                )
            self._resolver = cast(KeyResolver, target)

    async def for_org(self, org_id: str) -> str | None:
        """The organization's key; None when it has none (its turns cannot run)."""
        if self._resolver is None:
            return self._default or None
        key = self._resolver(org_id)
        if inspect.isawaitable(key):
            key = await key
        return key.strip() or None if isinstance(key, str) else None


class ModelClients:
    """SDK clients by key, each made once (a client holds its connection pool). Retries
    are off: Temporal retries the activity."""

    def __init__(self, keys: ModelKeys, base_url: str | None) -> None:
        self._keys = keys
        self._base_url = base_url
        self._clients: dict[str, anthropic.AsyncAnthropic] = {}

    async def for_org(self, org_id: str) -> anthropic.AsyncAnthropic | None:
        key = await self._keys.for_org(org_id)
        if key is None:
            return None
        client = self._clients.get(key)
        if client is None:
            client = anthropic.AsyncAnthropic(api_key=key, base_url=self._base_url, max_retries=0)
            self._clients[key] = client
        return client

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
