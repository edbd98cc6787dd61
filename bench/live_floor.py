"""The live-lane floor: PostgreSQL LISTEN/NOTIFY with nothing of Parley around it.

The sender, `python -m bench.live_floor --deltas N --interval S` (run from the project
root; DATABASE_URL names the database), LISTENs on START. For each turn named there it
NOTIFYs N stamped deltas on DELTAS, one every S seconds (the fake model's stamp format and
pace), then an end item carrying their text. Every turn's items go out through one
connection, whatever has queued in one statement per round trip, as Parley's worker sends
its live lane (`activities.live`). The listener (`LiveFloorListener`, in the bench's own
process) LISTENs on DELTAS on one connection and hands each item to the turn waiting for it.

So a delta's latency is one NOTIFY -> LISTEN hop on this server, and time to first delta
adds one NOTIFY the other way (the request): no gateway, workflow, model or WebSocket.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass, field

from psycopg import AsyncConnection, sql

START = "bench_live_floor_start"
DELTAS = "bench_live_floor_deltas"
END = -1  # the seq of a turn's end item (its text: every delta's, in order)

Received = tuple[float, int, str]  # (wall clock when received, seq, text)


def encode(turn: str, seq: int, text: str) -> str:
    return json.dumps([turn, seq, text], separators=(",", ":"))


def decode(payload: str) -> tuple[str, int, str]:
    turn, seq, text = json.loads(payload)
    return str(turn), int(seq), str(text)


async def notify(conn: AsyncConnection, channel: str, payloads: list[str]) -> None:
    """Send `payloads` on `channel` in one statement (one round trip, delivered in order)."""
    calls = sql.SQL(", ").join(
        sql.SQL("pg_notify({}, {})").format(sql.Literal(channel), sql.Placeholder())
        for _ in payloads
    )
    await conn.execute(sql.SQL("select {}").format(calls), payloads)


@dataclass
class Sender:
    """Paces each requested turn's deltas; one task sends whatever has queued."""

    conn: AsyncConnection
    deltas: int
    interval: float
    queue: list[str] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    async def turn(self, turn: str) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        parts: list[str] = []
        for seq in range(self.deltas):
            delay = began + seq * self.interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            parts.append(f"<{time.time():.6f}>")
            self._put(encode(turn, seq, parts[-1]))
        self._put(encode(turn, END, "".join(parts)))

    def _put(self, payload: str) -> None:
        self.queue.append(payload)
        self.wake.set()

    async def run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            batch, self.queue = self.queue, []
            await notify(self.conn, DELTAS, batch)


async def serve(url: str, deltas: int, interval: float) -> None:
    async with (
        await AsyncConnection.connect(url, autocommit=True) as requests,
        await AsyncConnection.connect(url, autocommit=True) as send,
    ):
        await requests.execute(sql.SQL("listen {}").format(sql.Identifier(START)))
        sender = Sender(send, deltas, interval)
        turns: set[asyncio.Task[None]] = set()
        flusher = asyncio.create_task(sender.run())
        print("live floor listening", flush=True)
        try:
            async for request in requests.notifies():
                task = asyncio.create_task(sender.turn(request.payload))
                turns.add(task)
                task.add_done_callback(turns.discard)
        finally:
            for task in (flusher, *turns):
                task.cancel()
            await asyncio.gather(flusher, *turns, return_exceptions=True)


class LiveFloorListener:
    """The bench's side: requests turns, and receives every turn's items on one LISTEN."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._turns: dict[str, asyncio.Queue[Received]] = {}
        self._listen: AsyncConnection | None = None
        self._send: AsyncConnection | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._listen = await AsyncConnection.connect(self._url, autocommit=True)
        self._send = await AsyncConnection.connect(self._url, autocommit=True)
        await self._listen.execute(sql.SQL("listen {}").format(sql.Identifier(DELTAS)))
        self._task = asyncio.create_task(self._run(self._listen), name="live floor listener")

    async def _run(self, conn: AsyncConnection) -> None:
        async for item in conn.notifies():
            now = time.time()
            turn, seq, text = decode(item.payload)
            queue = self._turns.get(turn)
            if queue is not None:
                queue.put_nowait((now, seq, text))

    def open(self, turn: str) -> asyncio.Queue[Received]:
        queue: asyncio.Queue[Received] = asyncio.Queue()
        self._turns[turn] = queue
        return queue

    def close(self, turn: str) -> None:
        self._turns.pop(turn, None)

    async def request(self, turn: str) -> None:
        assert self._send is not None
        await notify(self._send, START, [turn])

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for conn in (self._listen, self._send):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="The live-lane floor's sender.")
    parser.add_argument("--deltas", type=int, default=100, help="stamped deltas per turn")
    parser.add_argument("--interval", type=float, default=0.01, help="seconds between deltas")
    args = parser.parse_args()

    async def run() -> None:
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await serve(os.environ["DATABASE_URL"], args.deltas, args.interval)

    asyncio.run(run())


if __name__ == "__main__":
    main()
