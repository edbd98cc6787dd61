"""The knowledge base's values: documents, who may read them, who asks, and what a search
finds. Shared by storage, search, ingestion and the gateway's admin API."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote, urlsplit

SNIPPET_CHARS = 280
Outcome = Literal["new", "changed", "skipped"]


@dataclass(frozen=True)
class Access:
    """Who may read a document. No one, unless one of these says so."""

    public: bool = False
    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Requester:
    """Who is asking: anonymous requesters (no user id) see public documents only."""

    org_id: str
    user_id: str | None = None
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Hit:
    document_id: str
    title: str
    source: str
    heading: str
    content: str
    score: float
    chunk_id: int = 0

    @property
    def snippet(self) -> str:
        return snippet(self.content)

    @property
    def url(self) -> str | None:
        return self.source if is_web(self.source) else None


@dataclass
class Document:
    id: str
    title: str
    source: str
    text: str
    access: Access = field(default_factory=Access)

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    """`text` cut to `limit` characters at a word boundary (an ellipsis marks the cut)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit - 1)
    return text[: cut if cut > 0 else limit - 1] + "…"


def is_web(source: str) -> bool:
    """A source that is an http(s) URL (citations link to it)."""
    return urlsplit(source).scheme in ("http", "https")


def file_name(source: str) -> str:
    """The file name a document's source ends with, the title of a document that has none
    of its own: `policies/returns.md` and `https://example.com/help/returns.md` are both
    `returns.md` (a source with no name in it stays whole)."""
    path = unquote(urlsplit(source).path) if is_web(source) else source
    return path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] or source
