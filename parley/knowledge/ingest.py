"""`parley ingest`: files and folders into the knowledge base.

A document's id and `source` are its path relative to the folder given (a file given
directly: its file name). Re-ingesting an unchanged file is skipped (content hash); a
changed one has its chunks replaced.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from parley.knowledge import documents
from parley.knowledge.chunking import SUPPORTED_SUFFIXES, extract
from parley.knowledge.embeddings import Embedder
from parley.knowledge.types import Access, Document, Outcome
from parley.logs import get_logger
from parley.storage.db import Conn

log = get_logger(__name__)


@dataclass
class Summary:
    seen: int = 0
    new: int = 0
    changed: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)
    chunks: int = 0

    def count(self, outcome: Outcome) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)

    def line(self) -> str:
        text = (
            f"{self.seen} documents seen: {self.new} new, {self.changed} changed, "
            f"{self.skipped} skipped; {self.chunks} chunks written"
        )
        return text + (f"; {len(self.failed)} failed" if self.failed else "")


def discover(paths: Iterable[Path]) -> list[tuple[Path, str]]:
    """(file, document id) for every supported file under `paths`, in a stable order."""
    found: list[tuple[Path, str]] = []
    for root in paths:
        if root.is_dir():
            for path in sorted(root.rglob("*")):
                if path.is_file() and path.suffix.lower() in SUPPORTED_SUFFIXES:
                    found.append((path, path.relative_to(root).as_posix()))
        elif root.is_file():
            found.append((root, root.name))
        else:
            raise FileNotFoundError(f"no such file or folder: {root}")
    return found


async def ingest_files(
    conn: Conn,
    files: list[tuple[Path, str]],
    *,
    org_id: str,
    access: Access,
    progress: Callable[[int], None] = lambda _: None,
    embedder: Embedder | None = None,
) -> Summary:
    """Store every file as a document. On an autocommit connection (the pool's) each
    document commits on its own, so a failure midway keeps what was stored before it."""
    summary = Summary()
    for path, doc_id in files:
        summary.seen += 1
        try:
            extracted = extract(path)
        except Exception as err:  # one unreadable file must not stop the run
            log.warning("could not read file", path=str(path), error=str(err))
            summary.failed.append(doc_id)
            progress(1)
            continue
        doc = Document(doc_id, extracted.title, doc_id, extracted.text, access)
        outcome, chunks = await documents.upsert_document(conn, org_id, doc, embedder)
        summary.count(outcome)
        summary.chunks += chunks
        progress(1)
    if summary.new or summary.changed:
        await documents.refresh_statistics(conn)
    return summary
