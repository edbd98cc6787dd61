"""Embedding providers for dense retrieval (`PARLEY_EMBEDDINGS`).

Dense search runs when the database has pgvector *and* a provider is configured; its
results are fused with full-text search by reciprocal rank. A provider is any object with
a `name`, a `dimensions` count and `async embed(texts) -> list[list[float]]`:

    PARLEY_EMBEDDINGS=hashing              the built-in, dependency-free hashing embedder
    PARLEY_EMBEDDINGS=mycompany.emb:model  an object (or a zero-argument factory) you provide

The hashing embedder maps stemmed terms into a fixed number of buckets: deterministic and
offline, it makes the dense path testable everywhere, but it is lexical, not semantic. For
semantic recall plug in a sentence-embedding model through the second form.
"""

from __future__ import annotations

import hashlib
import importlib
import math
from functools import cache
from typing import Protocol, runtime_checkable

from parley.knowledge.text import terms


@runtime_checkable
class Embedder(Protocol):
    name: str
    dimensions: int

    async def embed(self, texts: list[str]) -> list[list[float]]: ...


class HashingEmbedder:
    """Feature hashing of stemmed terms, L2-normalised (cosine distance works as expected)."""

    def __init__(self, dimensions: int = 256) -> None:
        self.dimensions = dimensions
        self.name = f"hashing-{dimensions}"

    def _vector(self, text: str) -> list[float]:
        vec = [0.0] * self.dimensions
        for term in terms(text):
            digest = hashlib.blake2b(term.encode(), digest_size=8).digest()
            bucket = int.from_bytes(digest[:4], "little") % self.dimensions
            vec[bucket] += 1.0 if digest[4] & 1 else -1.0
        norm = math.sqrt(sum(v * v for v in vec)) or 1.0
        return [v / norm for v in vec]

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return [self._vector(t) for t in texts]


@cache
def load_embedder(spec: str | None) -> Embedder | None:
    """The provider `PARLEY_EMBEDDINGS` names (one per process), or None: full-text only."""
    if not spec:
        return None
    if spec == "hashing":
        return HashingEmbedder()
    module_name, sep, attr = spec.partition(":")
    if not sep:
        raise ValueError(f"PARLEY_EMBEDDINGS={spec!r}: use 'hashing' or 'module:attribute'")
    target = getattr(importlib.import_module(module_name), attr)
    embedder = target() if callable(target) and not isinstance(target, Embedder) else target
    if not isinstance(embedder, Embedder):
        raise TypeError(f"PARLEY_EMBEDDINGS={spec!r} is not an embedder (name, dimensions, embed)")
    return embedder


def to_pgvector(vector: list[float]) -> str:
    """pgvector's text form, so no client-side adapter package is needed."""
    return "[" + ",".join(f"{v:.6g}" for v in vector) + "]"
