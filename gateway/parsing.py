"""Parsing uploaded documents off the event loop, in a process of its own.

An HTML document nested thousands of elements deep takes seconds of CPU to parse; on the
gateway's event loop (or in a thread, holding the GIL) that stalls every socket and
`/healthz` with it. A one-process pool keeps that CPU out of the gateway's process; it is
started on the first upload (spawned, not forked: the gateway runs threads).
"""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from parley.knowledge.chunking import Extracted, extract_string


class DocumentParser:
    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    async def extract(self, content: str, fmt: str, fallback_title: str) -> Extracted:
        if fmt != "html":  # plain text and markdown need no parsing worth moving
            return extract_string(content, fmt, fallback_title)
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn")
            )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, extract_string, content, fmt, fallback_title)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
