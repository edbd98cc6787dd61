"""A TCP proxy a test can cut: the network between a browser and the gateway, failing on cue.

`cut()` closes every connection and refuses new ones until `restore()` (a dropped network);
`freeze()` stops relaying on the connections open now but leaves them open, while new ones
work (a half-open socket: nothing arrives, nothing says it is gone).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class _Link:
    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.writers = (client, upstream)
        self.pumps: list[asyncio.Task[None]] = []

    def stop_relaying(self) -> None:
        for pump in self.pumps:
            pump.cancel()

    def close(self) -> None:
        self.stop_relaying()
        for writer in self.writers:
            writer.close()


class TcpProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.accepted = 0  # connections relayed since the start
        self.refused = 0  # connections refused while cut
        self._links: set[_Link] = set()
        self._frozen: list[_Link] = []
        self._refusing = False
        self._server: asyncio.Server | None = None
        self._arrived = asyncio.Condition()

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.cut()
        for link in self._frozen:
            link.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self) -> None:
        """Drop every connection; refuse new ones until `restore()`."""
        self._refusing = True
        for link in list(self._links):
            link.close()
        self._links.clear()

    async def wait_accepted(self, n: int, timeout: float = 10) -> None:
        """Until `n` connections in all have been relayed."""
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: self.accepted >= n)

    async def wait_refused(self, n: int, timeout: float = 10) -> None:
        """Until `n` connections in all have been refused."""
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: self.refused >= n)

    def restore(self) -> None:
        self._refusing = False

    def freeze(self) -> None:
        """Stop relaying on today's connections without closing them."""
        for link in list(self._links):
            link.stop_relaying()
            self._frozen.append(link)
        self._links.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            writer.close()
            self.refused += 1
            async with self._arrived:
                self._arrived.notify_all()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self.accepted += 1
        async with self._arrived:
            self._arrived.notify_all()
        link = _Link(writer, up_writer)
        link.pumps = [
            asyncio.create_task(self._pump(reader, up_writer, link)),
            asyncio.create_task(self._pump(up_reader, writer, link)),
        ]
        self._links.add(link)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link
    ) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            # One side ended: end the other (unless frozen: cancelled pumps leave it open).
            if link in self._links:
                self._links.discard(link)
                link.close()


@asynccontextmanager
async def tcp_proxy(target_port: int) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy(target_port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()
