"""Serving the gateway with uvicorn, configured the same way everywhere it runs: the public
listener and, when `PARLEY_ADMIN_PORT` is set, the admin API's own, in one process."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator

import uvicorn
from starlette.applications import Starlette

from gateway import admin
from gateway.app import create_app
from parley.protocol import MAX_FRAME_BYTES
from parley.settings import Settings

START_TIMEOUT = 60.0


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


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to `Listeners` (two servers share a process)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Listeners:
    """The gateway's uvicorn servers: the public one (its lifespan opens the services), and
    with `PARLEY_ADMIN_PORT` set, `/admin` alone on `PARLEY_ADMIN_HOST:PARLEY_ADMIN_PORT`,
    sharing those services. `port` overrides `PARLEY_PORT` (0: any free port)."""

    def __init__(self, settings: Settings, *, port: int | None = None) -> None:
        self.app = create_app(settings)
        self.servers: list[uvicorn.Server] = [
            _Server(uvicorn_config(self.app, settings, port=port))
        ]
        if settings.admin_port is not None:
            config = uvicorn.Config(
                admin.admin_app(self.app),
                host=settings.admin_host,
                port=settings.admin_port,
                lifespan="off",  # the public server's lifespan opens and closes the services
                log_config=None,
                timeout_graceful_shutdown=5,
            )
            self.servers.append(_Server(config))
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def port(self) -> int:
        """The public listener's port (once started)."""
        return int(self.servers[0].servers[0].sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Start each server in turn: the admin one only once the services are open."""
        for server in self.servers:
            task = asyncio.create_task(server.serve())
            self._tasks.append(task)
            async with asyncio.timeout(START_TIMEOUT):
                while not server.started:  # uvicorn has a flag for this, no event
                    if task.done():
                        task.result()
                        raise RuntimeError("a gateway listener stopped during start-up")
                    await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """The admin server first: its requests use the services the public one closes."""
        for server, task in reversed(list(zip(self.servers, self._tasks, strict=False))):
            server.should_exit = True
            await task
        self._tasks.clear()

    def run(self) -> None:
        """`serve` on the event loop uvicorn would pick (uvloop when installed)."""
        with asyncio.Runner(loop_factory=self.servers[0].config.get_loop_factory()) as runner:
            runner.run(self.serve())

    async def serve(self) -> None:
        """Until SIGINT or SIGTERM, or until one of the servers stops by itself."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await self.start()
            stopped = asyncio.create_task(stop.wait())
            await asyncio.wait([stopped, *self._tasks], return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
        finally:
            await self.stop()
