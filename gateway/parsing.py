"""Parsing and chunking uploaded documents off the event loop, in a process of its own,
under limits.

An HTML document nested thousands of elements deep takes seconds of CPU to parse, and a
large one takes a while to chunk; on the gateway's event loop (or in a thread, holding the
GIL) that stalls every socket and `/healthz` with it. A one-process pool keeps that CPU out
of the gateway's process; it is started on the first upload (spawned, not forked: the
gateway runs threads).

Each document is held to limits: its HTML nesting depth and its number of chunks
(`DocumentRejected`), and a time limit (`ParseTimedOut`). Documents go to the pool one at a
time and the clock starts when a warm worker has the document, so a document is never
charged for the one before it or for the worker's start-up. A worker that runs over is
killed; the next document gets a fresh one.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from parley.knowledge.chunking import Chunk, chunk_text, extract_string, html_depth

# A worker that has not started within this long is broken, whatever the document.
_START_TIMEOUT = 120.0


@dataclass(frozen=True)
class Limits:
    seconds: float
    max_html_depth: int
    max_chunks: int


@dataclass(frozen=True)
class Prepared:
    """A document ready to store: its title, text and chunks."""

    title: str
    text: str
    chunks: list[Chunk]


class DocumentRejected(ValueError):
    """The document is over a depth or size limit (the message says which)."""


class ParseTimedOut(Exception):
    """Parsing and chunking ran over the time limit; the worker was killed."""


def prepare_document(content: str, fmt: str, fallback_title: str, limits: Limits) -> Prepared:
    """Extract and chunk one document (in the pool's process), within its depth and size
    limits."""
    if fmt == "html" and html_depth(content, limits.max_html_depth) > limits.max_html_depth:
        raise DocumentRejected(f"the HTML nests elements more than {limits.max_html_depth} deep")
    extracted = extract_string(content, fmt, fallback_title)
    chunks = chunk_text(extracted.text)
    if len(chunks) > limits.max_chunks:
        raise DocumentRejected(
            f"the document makes {len(chunks)} chunks; the limit is {limits.max_chunks}"
        )
    return Prepared(extracted.title, extracted.text, chunks)


def _ready() -> bool:
    return True


class DocumentParser:
    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None
        self._turn = asyncio.Lock()  # one document in the pool at a time

    async def prepare(
        self, content: str, fmt: str, fallback_title: str, limits: Limits
    ) -> Prepared:
        """The document's title, text and chunks, computed in the pool's process.

        `DocumentRejected` over a depth or size limit, `ParseTimedOut` over the time limit.
        """
        loop = asyncio.get_running_loop()
        async with self._turn:
            pool = await self._warm_pool()
            work = loop.run_in_executor(
                pool, prepare_document, content, fmt, fallback_title, limits
            )
            try:
                async with asyncio.timeout(limits.seconds):
                    return await work
            except TimeoutError:
                self._kill()
                raise ParseTimedOut(
                    f"parsing and chunking took longer than {limits.seconds:g}s"
                ) from None
            except BrokenProcessPool:
                self._kill()  # the worker died (out of memory, say); the next one is fresh
                raise

    async def _warm_pool(self) -> ProcessPoolExecutor:
        """The pool, with its worker started (its start-up is no document's time)."""
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn")
            )
            try:
                async with asyncio.timeout(_START_TIMEOUT):
                    await asyncio.get_running_loop().run_in_executor(self._pool, _ready)
            except BaseException:
                self._kill()
                raise
        return self._pool

    def _kill(self) -> None:
        """Stop the pool's worker now, whatever it is doing, and forget the pool."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        for process in list(pool._processes.values()):
            process.kill()
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """At shutdown: nobody waits for a document still being parsed."""
        self._kill()
