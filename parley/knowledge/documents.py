"""Documents in PostgreSQL: stored with their chunks (and embeddings, where pgvector is
there), replaced when changed, skipped when not, listed and deleted."""

from __future__ import annotations

from parley.knowledge.chunking import Chunk, chunk_text
from parley.knowledge.embeddings import Embedder, to_pgvector
from parley.knowledge.types import Document, Outcome
from parley.storage.db import Conn


async def upsert_document(
    conn: Conn,
    org_id: str,
    doc: Document,
    embedder: Embedder | None = None,
    chunks: list[Chunk] | None = None,
) -> tuple[Outcome, int]:
    """Store `doc` and its chunks: unchanged content, access, title and source is skipped;
    changed is replaced (only the title and source, when only they changed). Returns the
    outcome and the number of chunks written. With an embedder (and pgvector), chunks
    without an embedding from it get one. `chunks` are `doc.text`'s, when
    the caller has chunked it already (the admin API does, off the event loop)."""
    outcome, written = await _store(conn, org_id, doc, chunks)
    if embedder is not None and await vectors_ready(conn):
        await _embed_missing(conn, org_id, doc.id, embedder)
    return outcome, written


async def _store(
    conn: Conn, org_id: str, doc: Document, chunks: list[Chunk] | None
) -> tuple[Outcome, int]:
    async with conn.transaction():
        cur = await conn.execute(
            "select content_hash, acl_public, acl_users, acl_groups, title, source from documents"
            " where org_id = %s and id = %s for update",
            (org_id, doc.id),
        )
        existing = await cur.fetchone()
        access = doc.access
        if existing is not None and (
            existing["content_hash"],
            existing["acl_public"],
            sorted(existing["acl_users"]),
            sorted(existing["acl_groups"]),
        ) == (doc.content_hash, access.public, sorted(access.users), sorted(access.groups)):
            if (existing["title"], existing["source"]) == (doc.title, doc.source):
                return "skipped", 0
            # Same text, new title (say, one stored before untitled documents were titled
            # by their file name): the chunks stay.
            await conn.execute(
                "update documents set title = %s, source = %s, updated_at = now()"
                " where org_id = %s and id = %s",
                (doc.title, doc.source, org_id, doc.id),
            )
            return "changed", 0
        await conn.execute(
            "insert into documents (org_id, id, title, source, content_hash, acl_public,"
            " acl_users, acl_groups) values (%s, %s, %s, %s, %s, %s, %s, %s)"
            " on conflict (org_id, id) do update set title = excluded.title,"
            " source = excluded.source, content_hash = excluded.content_hash,"
            " acl_public = excluded.acl_public, acl_users = excluded.acl_users,"
            " acl_groups = excluded.acl_groups, updated_at = now()",
            (
                org_id,
                doc.id,
                doc.title,
                doc.source,
                doc.content_hash,
                access.public,
                list(access.users),
                list(access.groups),
            ),
        )
        await conn.execute(
            "delete from chunks where org_id = %s and document_id = %s", (org_id, doc.id)
        )
        if chunks is None:
            chunks = chunk_text(doc.text)
        await _copy_chunks(conn, org_id, doc, chunks)
    return ("new" if existing is None else "changed"), len(chunks)


async def _copy_chunks(conn: Conn, org_id: str, doc: Document, chunks: list[Chunk]) -> None:
    access = doc.access
    async with (
        conn.cursor() as cur,
        cur.copy(
            "copy chunks (org_id, document_id, ord, heading, content, acl_public, acl_users,"
            " acl_groups) from stdin"
        ) as copy,
    ):
        for ord_, chunk in enumerate(chunks):
            await copy.write_row(
                (
                    org_id,
                    doc.id,
                    ord_,
                    chunk.heading,
                    chunk.content,
                    access.public,
                    list(access.users),
                    list(access.groups),
                )
            )


async def delete_document(conn: Conn, org_id: str, document_id: str) -> bool:
    cur = await conn.execute(
        "delete from documents where org_id = %s and id = %s", (org_id, document_id)
    )
    return cur.rowcount == 1


async def list_documents(conn: Conn, org_id: str) -> list[dict]:
    cur = await conn.execute(
        "select d.id, d.title, d.source, d.acl_public as public, d.acl_users as users,"
        " d.acl_groups as groups, d.updated_at,"
        " (select count(*) from chunks c where c.org_id = d.org_id and c.document_id = d.id)"
        " as chunks from documents d where d.org_id = %s order by d.id",
        (org_id,),
    )
    return await cur.fetchall()


async def refresh_statistics(conn: Conn) -> None:
    """Re-read the chunks' word statistics, from which search picks its candidate tiers
    (after a bulk ingest; autovacuum would get there, later)."""
    await conn.execute("analyze chunks")


_VECTOR_TABLES: dict[tuple[str, str], bool] = {}


async def vectors_ready(conn: Conn) -> bool:
    """Whether this database has pgvector's chunk_embeddings (cached per database)."""
    key = (conn.info.host, conn.info.dbname)
    if key not in _VECTOR_TABLES:
        cur = await conn.execute("select to_regclass('chunk_embeddings') is not null as ready")
        row = await cur.fetchone()
        _VECTOR_TABLES[key] = row is not None and row["ready"]
    return _VECTOR_TABLES[key]


async def _embed_missing(conn: Conn, org_id: str, document_id: str, embedder: Embedder) -> None:
    cur = await conn.execute(
        "select c.id, c.heading, c.content from chunks c"
        " where c.org_id = %s and c.document_id = %s and not exists ("
        " select 1 from chunk_embeddings e where e.chunk_id = c.id and e.model = %s)"
        " order by c.ord",
        (org_id, document_id, embedder.name),
    )
    rows = await cur.fetchall()
    if not rows:
        return
    vectors = await embedder.embed([f"{r['heading']}\n{r['content']}" for r in rows])
    async with conn.transaction(), conn.cursor() as insert:
        await insert.executemany(
            "insert into chunk_embeddings (chunk_id, model, embedding) values (%s, %s, %s::vector)"
            " on conflict (chunk_id) do update set model = excluded.model,"
            " embedding = excluded.embedding",
            [(r["id"], embedder.name, to_pgvector(v)) for r, v in zip(rows, vectors, strict=True)],
        )
