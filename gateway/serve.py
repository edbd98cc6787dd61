"""Serving the gateway with uvicorn, configured the same way everywhere it runs."""

from __future__ import annotations

import uvicorn
from starlette.applications import Starlette

from parley.protocol import MAX_FRAME_BYTES
from parley.settings import Settings


def uvicorn_config(
    app: Starlette, settings: Settings, *, port: int | None = None
) -> uvicorn.Config:
    """uvicorn settings the protocol depends on.

    `ws_max_size` makes the WebSocket layer close an oversized message with 1009 while
    reading its header, before the payload is buffered.
    """
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port if port is None else port,
        ws="websockets-sansio",
        ws_max_size=MAX_FRAME_BYTES,
        ws_ping_interval=20,
        ws_ping_timeout=20,
        lifespan="on",
        log_config=None,
        timeout_graceful_shutdown=5,
    )
