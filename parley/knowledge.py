"""The knowledge base in PostgreSQL: documents, their chunks, and access-filtered search.

Search is full-text (English stemming, ranked, OR over the query's terms, so "return
policy" finds "returns are accepted ..."). The access filter is part of the same SQL
statement: a chunk is only ever read when its document is public, lists the requester, or
one of the requester's groups, within the requester's organization. Nothing the requester
may not read reaches the model, a tool result or a citation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Literal
from urllib.parse import urlsplit

from psycopg import AsyncConnection

from parley.chunking import Chunk, chunk_text
from parley.embeddings import Embedder, to_pgvector

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
        return self.source if urlsplit(self.source).scheme in ("http", "https") else None


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


async def upsert_document(
    conn: AsyncConnection, org_id: str, doc: Document, embedder: Embedder | None = None
) -> tuple[Outcome, int]:
    """Store `doc` and its chunks: unchanged content and access is skipped; changed is
    replaced. Returns the outcome and the number of chunks written. With an embedder (and
    pgvector), chunks without an embedding from it get one."""
    outcome, written = await _store(conn, org_id, doc)
    if embedder is not None and await vectors_ready(conn):
        await _embed_missing(conn, org_id, doc.id, embedder)
    return outcome, written


async def _store(conn: AsyncConnection, org_id: str, doc: Document) -> tuple[Outcome, int]:
    async with conn.transaction():
        cur = await conn.execute(
            "select content_hash, acl_public, acl_users, acl_groups from documents"
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
            return "skipped", 0
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
        chunks = chunk_text(doc.text)
        await _copy_chunks(conn, org_id, doc, chunks)
    return ("new" if existing is None else "changed"), len(chunks)


async def _copy_chunks(
    conn: AsyncConnection, org_id: str, doc: Document, chunks: list[Chunk]
) -> None:
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


async def delete_document(conn: AsyncConnection, org_id: str, document_id: str) -> bool:
    cur = await conn.execute(
        "delete from documents where org_id = %s and id = %s", (org_id, document_id)
    )
    return cur.rowcount == 1


async def list_documents(conn: AsyncConnection, org_id: str) -> list[dict]:
    cur = await conn.execute(
        "select d.id, d.title, d.source, d.acl_public as public, d.acl_users as users,"
        " d.acl_groups as groups, d.updated_at,"
        " (select count(*) from chunks c where c.org_id = d.org_id and c.document_id = d.id)"
        " as chunks from documents d where d.org_id = %s order by d.id",
        (org_id,),
    )
    return await cur.fetchall()


async def set_user_groups(
    conn: AsyncConnection, org_id: str, user_id: str, groups: list[str]
) -> None:
    """Replace the groups `user_id` belongs to in `org_id` (what group access lists match)."""
    async with conn.transaction():
        await conn.execute(
            "delete from user_groups where org_id = %s and user_id = %s", (org_id, user_id)
        )
        async with conn.cursor() as cur:
            await cur.executemany(
                "insert into user_groups (org_id, user_id, group_id) values (%s, %s, %s)",
                [(org_id, user_id, g) for g in sorted(set(groups))],
            )


async def requester(conn: AsyncConnection, org_id: str, user_id: str | None) -> Requester:
    """The requester with the groups they belong to (what group access lists match)."""
    return Requester(org_id, user_id, await requester_groups(conn, org_id, user_id))


async def requester_groups(
    conn: AsyncConnection, org_id: str, user_id: str | None
) -> tuple[str, ...]:
    if user_id is None:
        return ()
    cur = await conn.execute(
        "select group_id from user_groups where org_id = %s and user_id = %s order by group_id",
        (org_id, user_id),
    )
    return tuple(r["group_id"] for r in await cur.fetchall())


# Ranking every chunk that shares a word with the query is what makes full-text search slow
# on a large corpus: a common word ("order", "app") matches most chunks, and each match
# is ranked before the LIMIT. So candidates come in tiers, cheapest first, and PostgreSQL
# never starts a later branch of the UNION ALL once the LIMIT is filled:
#   1. chunks containing a rare query word (one in under 1% of chunks, per the planner's
#      statistics of chunks.tsv; a word the statistics do not list is rare),
#   2. else chunks containing all of the common query words,
#   3. else the plain OR over the query's words, ranking at most CANDIDATE_CAP matches.
# Words are the lexemes of to_tsvector('english', query), quoted and parsed with the
# 'simple' configuration so they are not stemmed twice. The access filter is in every tier;
# the documents join runs after the LIMIT. (bench/retrieval.py measured the alternatives.)
COMMON_WORD_FREQUENCY = 0.01
CANDIDATE_CAP = 2000
_ACL = "(c.acl_public or c.acl_users @> array[%(user)s]::text[] or c.acl_groups && %(groups)s)"
# Weights {D, C, B, A}: content (B) counts fully, the heading path (A) half: every chunk of
# a document shares its title, so headings must not outweigh what a chunk says.
_WEIGHTS = "'{0.1, 0.2, 1.0, 0.5}'"
_RANKED = (
    "c.id, c.org_id, c.document_id, c.heading, c.content,"
    f" ts_rank({_WEIGHTS}, c.tsv, q.query, 32) as score"
)
_SEARCH = f"""
with words as (
    select distinct lexeme from unnest(to_tsvector('english', %(text)s))
),
frequency as (
    select w.lexeme, coalesce(s.freq, 0) as freq
    from words w
    left join (
        select e.lexeme, e.freq
        from pg_stats st,
             unnest(st.most_common_elems::text::text[], st.most_common_elem_freqs)
                 as e(lexeme, freq)
        where st.schemaname = current_schema() and st.tablename = 'chunks'
          and st.attname = 'tsv'
    ) s using (lexeme)
),
q as (
    select to_tsquery('simple', coalesce(string_agg(quote_literal(lexeme), ' | '), ''))
               as query,
           to_tsquery('simple', coalesce(string_agg(quote_literal(lexeme), ' | ')
               filter (where freq < {COMMON_WORD_FREQUENCY}), '')) as rare,
           to_tsquery('simple', coalesce(string_agg(quote_literal(lexeme), ' & ')
               filter (where freq >= {COMMON_WORD_FREQUENCY}), '')) as common
    from frequency
),
hits as (
    (select {_RANKED}, 1 as tier
     from q, chunks c
     where c.tsv @@ q.rare and c.org_id = %(org)s and {_ACL}
     order by score desc, c.id limit %(limit)s)
    union all
    (select {_RANKED}, 2 as tier
     from q, chunks c
     where c.tsv @@ q.common and not c.tsv @@ q.rare and c.org_id = %(org)s and {_ACL}
     order by score desc, c.id limit %(limit)s)
    union all
    (select * from (
         select {_RANKED}, 3 as tier
         from q, chunks c
         where c.tsv @@ q.query and not c.tsv @@ q.rare and not c.tsv @@ q.common
           and c.org_id = %(org)s and {_ACL}
         limit {CANDIDATE_CAP}) capped
     order by score desc, id limit %(limit)s)
    limit %(limit)s
)
select h.id as chunk_id, h.document_id, d.title, d.source, h.heading, h.content, h.score
from hits h
join documents d on d.org_id = h.org_id and d.id = h.document_id
order by h.tier, h.score desc, h.id
"""


_DENSE = f"""
select c.id as chunk_id, c.document_id, d.title, d.source, c.heading, c.content,
       1 - (e.embedding <=> %(vector)s::vector) as score
from chunk_embeddings e
join chunks c on c.id = e.chunk_id
join documents d on d.org_id = c.org_id and d.id = c.document_id
where e.model = %(model)s
  and c.org_id = %(org)s
  and {_ACL}
order by e.embedding <=> %(vector)s::vector
limit %(limit)s
"""


def _acl_params(requester: Requester) -> dict[str, object]:
    return {
        "org": requester.org_id,
        "user": requester.user_id,
        "groups": list(requester.groups),
    }


async def dense_search(
    conn: AsyncConnection, requester: Requester, text: str, limit: int, embedder: Embedder
) -> list[Hit]:
    """Nearest chunks by embedding (cosine), under the same access filter."""
    [vector] = await embedder.embed([text])
    cur = await conn.execute(
        _DENSE,
        {
            **_acl_params(requester),
            "vector": to_pgvector(vector),
            "model": embedder.name,
            "limit": limit,
        },
    )
    return [_hit(r) for r in await cur.fetchall()]


RERANK_POOL = 4  # candidates fetched per result when a later stage re-orders them
RRF_K = 60  # reciprocal rank fusion's damping constant (the usual choice)


async def search(
    conn: AsyncConnection,
    requester: Requester,
    text: str,
    limit: int = 3,
    *,
    rerank: bool = False,
    embedder: Embedder | None = None,
) -> list[Hit]:
    """The best chunks for `text` that `requester` may read, best first.

    Full-text search; fused by reciprocal rank with dense search when an embedder is given
    and the database has pgvector; then optionally reranked lexically.
    """
    if not text.strip() or limit <= 0:
        return []
    dense = embedder is not None and await vectors_ready(conn)
    fetch = max(limit * RERANK_POOL, 12) if rerank or dense else limit
    cur = await conn.execute(_SEARCH, {**_acl_params(requester), "text": text, "limit": fetch})
    hits = [_hit(r) for r in await cur.fetchall()]
    if dense:
        assert embedder is not None
        hits = fuse([hits, await dense_search(conn, requester, text, fetch, embedder)])
        if not rerank:
            return hits[:limit]
    if rerank:
        from parley.rerank import lexical_rerank

        return lexical_rerank(text, hits, limit)
    return hits


MAX_CITATIONS = 8


async def record_sources(
    conn: AsyncConnection, turn_id: str, hits: list[Hit], origin: Literal["grounding", "search"]
) -> None:
    """Remember what a turn drew on, for its citations (and to reuse its grounding).

    Grounding is recorded once per turn: a retried first model call replaces it.
    """
    async with conn.transaction(), conn.cursor() as cur:
        if origin == "grounding":
            await cur.execute(
                "delete from turn_sources where turn_id = %s and origin = 'grounding'", (turn_id,)
            )
        await cur.executemany(
            "insert into turn_sources (turn_id, document_id, title, source, heading, content,"
            " score, origin) values (%s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (turn_id, h.document_id, h.title, h.source, h.heading, h.content, h.score, origin)
                for h in hits
            ],
        )


async def turn_grounding(conn: AsyncConnection, turn_id: str) -> list[Hit]:
    """The grounding recorded by the turn's first model call."""
    cur = await conn.execute(
        "select document_id, title, source, heading, content, score from turn_sources"
        " where turn_id = %s and origin = 'grounding' order by score desc, created_at",
        (turn_id,),
    )
    return [_hit(r) for r in await cur.fetchall()]


def _hit(row: dict) -> Hit:
    return Hit(
        row["document_id"],
        row["title"],
        row["source"],
        row["heading"],
        row["content"],
        row["score"],
        row.get("chunk_id", 0),
    )


def fuse(rankings: list[list[Hit]]) -> list[Hit]:
    """Reciprocal rank fusion: each list votes 1/(k + rank) for its chunks."""
    scores: dict[int, float] = {}
    first_seen: dict[int, Hit] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, 1):
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + 1.0 / (RRF_K + rank)
            first_seen.setdefault(hit.chunk_id, hit)
    ordered = sorted(scores, key=lambda cid: -scores[cid])
    return [replace(first_seen[cid], score=round(scores[cid], 6)) for cid in ordered]


_VECTOR_TABLES: dict[tuple[str, str], bool] = {}


async def vectors_ready(conn: AsyncConnection) -> bool:
    """Whether this database has pgvector's chunk_embeddings (cached per database)."""
    key = (conn.info.host, conn.info.dbname)
    if key not in _VECTOR_TABLES:
        cur = await conn.execute("select to_regclass('chunk_embeddings') is not null as ready")
        _VECTOR_TABLES[key] = (await cur.fetchone())["ready"]
    return _VECTOR_TABLES[key]


async def _embed_missing(
    conn: AsyncConnection, org_id: str, document_id: str, embedder: Embedder
) -> None:
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


async def turn_citations(conn: AsyncConnection, turn_id: str) -> list[dict]:
    """The turn's citations: grounding and search results, one per document, best first."""
    cur = await conn.execute(
        "select distinct on (document_id) document_id, title, source, heading, content, score"
        " from turn_sources where turn_id = %s order by document_id, score desc",
        (turn_id,),
    )
    hits = sorted((_hit(r) for r in await cur.fetchall()), key=lambda h: -h.score)
    citations = []
    for hit in hits[:MAX_CITATIONS]:
        citation = {
            "id": hit.document_id,
            "title": hit.title,
            "snippet": hit.snippet,
            "score": round(hit.score, 4),
        }
        if hit.url:
            citation["url"] = hit.url
        citations.append(citation)
    return citations
