"""Dense retrieval where PostgreSQL has pgvector: embeddings per chunk, the access filter
on the vector path too, and reciprocal-rank fusion with full-text search."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from parley.knowledge import documents, search
from parley.knowledge.embeddings import HashingEmbedder, load_embedder
from parley.knowledge.search import fuse
from parley.knowledge.types import Access, Document, Hit, Requester
from parley.stack.databases import embedded_server, fresh_database
from parley.storage import db


@pytest.fixture(scope="module")
def vector_server(database_server: str) -> Iterator[str]:
    """The run's server when it has pgvector, else an embedded one (pgserver ships it)."""
    with psycopg.connect(database_server, autocommit=True) as conn:
        has_vector = conn.execute(
            "select 1 from pg_available_extensions where name = 'vector'"
        ).fetchone()
    if has_vector:
        yield database_server
        return
    with embedded_server("parley-test-pgvector-") as url:
        yield url


@pytest.fixture(scope="module")
async def vector_pool(vector_server: str) -> AsyncIterator:
    with fresh_database(vector_server, "parley_vec") as url:
        await db.migrate(url)
        async with db.create_pool(url, max_size=2, name="vectors") as pool:
            yield pool


DOCS = [
    Document(
        "returns.md",
        "Returns",
        "returns.md",
        "# Returns\n\nReturns are accepted within 17 days.",
        Access(True),
    ),
    Document(
        "shipping.md",
        "Shipping",
        "shipping.md",
        "# Shipping\n\nStandard shipping takes 5 to 7 days.",
        Access(True),
    ),
    Document(
        "private.md",
        "Private",
        "private.md",
        "# Bonus\n\nBonus payouts are in March.",
        Access(users=("alice",)),
    ),
]


async def test_embeddings_are_stored_and_the_dense_path_filters_access(vector_pool) -> None:
    embedder = HashingEmbedder()
    org_id = f"org-{uuid.uuid4().hex[:6]}"
    async with vector_pool.connection() as conn:
        assert await documents.vectors_ready(conn)
        for doc in DOCS:
            await documents.upsert_document(conn, org_id, doc, embedder)
        cur = await conn.execute(
            "select count(*) as chunks, count(e.chunk_id) as embedded from chunks c"
            " left join chunk_embeddings e on e.chunk_id = c.id where c.org_id = %s",
            (org_id,),
        )
        counts = await cur.fetchone()
        assert counts["chunks"] == counts["embedded"] == 3

        nearest = await search.dense_search(
            conn, Requester(org_id, "alice"), "bonus payouts", 1, embedder
        )
        assert nearest[0].document_id == "private.md" and nearest[0].chunk_id > 0
        for stranger in (Requester(org_id, "bob"), Requester(org_id)):
            seen = await search.dense_search(conn, stranger, "bonus payouts", 10, embedder)
            assert "private.md" not in {h.document_id for h in seen}
            assert {h.document_id for h in seen} == {"returns.md", "shipping.md"}

        fused = await search.search(
            conn, Requester(org_id), "how long does shipping take", 2, embedder=embedder
        )
        assert fused[0].document_id == "shipping.md"
        plain = await search.search(conn, Requester(org_id), "how long does shipping take", 2)
        assert fused[0].score != plain[0].score  # fused scores are reciprocal-rank sums


async def test_changed_documents_get_fresh_embeddings(vector_pool) -> None:
    embedder = HashingEmbedder()
    org_id = f"org-{uuid.uuid4().hex[:6]}"
    doc = DOCS[0]
    async with vector_pool.connection() as conn:
        await documents.upsert_document(conn, org_id, doc, embedder)
        changed = Document(
            doc.id, doc.title, doc.source, doc.text + "\n\nExchanges are free.", doc.access
        )
        outcome, _ = await documents.upsert_document(conn, org_id, changed, embedder)
        assert outcome == "changed"
        cur = await conn.execute(
            "select count(*) as n from chunks c join chunk_embeddings e on e.chunk_id = c.id"
            " where c.org_id = %s",
            (org_id,),
        )
        assert (await cur.fetchone())["n"] == 1
        # Embeddings for a document ingested before a provider was configured are filled in.
        other = f"org-{uuid.uuid4().hex[:6]}"
        await documents.upsert_document(conn, other, doc)
        outcome, _ = await documents.upsert_document(conn, other, doc, embedder)
        assert outcome == "skipped"
        cur = await conn.execute(
            "select count(*) as n from chunks c join chunk_embeddings e on e.chunk_id = c.id"
            " where c.org_id = %s",
            (other,),
        )
        assert (await cur.fetchone())["n"] == 1


def test_reciprocal_rank_fusion() -> None:
    def hit(chunk: int) -> Hit:
        return Hit(f"d{chunk}", "", "", "", "", 0.0, chunk)

    fused = fuse([[hit(1), hit(2), hit(3)], [hit(3), hit(1), hit(4)]])
    assert [h.chunk_id for h in fused] == [1, 3, 2, 4]
    assert fused[0].score == pytest.approx(1 / 61 + 1 / 62, abs=1e-6)


def test_loading_embedders(tmp_path: Path) -> None:
    assert load_embedder(None) is None
    assert load_embedder("hashing").dimensions == 256
    assert load_embedder("parley.knowledge.embeddings:HashingEmbedder").name == "hashing-256"
    with pytest.raises(ValueError, match="module:attribute"):
        load_embedder("nonsense")
    with pytest.raises(TypeError, match="not an embedder"):
        load_embedder("parley.knowledge.types:SNIPPET_CHARS")
