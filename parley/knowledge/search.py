"""Access-filtered search over the knowledge base.

Search is full-text (English stemming, ranked, OR over the query's terms, so "return
policy" finds "returns are accepted ..."). The access filter is part of the same SQL
statement: a chunk is only ever read when its document is public, lists the requester, or
one of the requester's groups, within the requester's organization. Nothing the requester
may not read reaches the model, a tool result or a citation.
"""

from __future__ import annotations

from dataclasses import replace

from parley.knowledge.documents import vectors_ready
from parley.knowledge.embeddings import Embedder, to_pgvector
from parley.knowledge.rerank import lexical_rerank
from parley.knowledge.types import Hit, Requester
from parley.storage.db import Conn

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


def full_text_sql(access_filter: str = _ACL) -> str:
    """The full-text search statement, with `access_filter` in each tier.

    Search uses the default. bench/retrieval.py passes "true": the same statement for a
    reader of everything, the baseline the access filter's cost is measured against.
    """
    return f"""
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
     where c.tsv @@ q.rare and c.org_id = %(org)s and {access_filter}
     order by score desc, c.id limit %(limit)s)
    union all
    (select {_RANKED}, 2 as tier
     from q, chunks c
     where c.tsv @@ q.common and not c.tsv @@ q.rare and c.org_id = %(org)s and {access_filter}
     order by score desc, c.id limit %(limit)s)
    union all
    (select * from (
         select {_RANKED}, 3 as tier
         from q, chunks c
         where c.tsv @@ q.query and not c.tsv @@ q.rare and not c.tsv @@ q.common
           and c.org_id = %(org)s and {access_filter}
         limit {CANDIDATE_CAP}) capped
     order by score desc, id limit %(limit)s)
    limit %(limit)s
)
select h.id as chunk_id, h.document_id, d.title, d.source, h.heading, h.content, h.score
from hits h
join documents d on d.org_id = h.org_id and d.id = h.document_id
order by h.tier, h.score desc, h.id
"""


_SEARCH = full_text_sql()


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
    conn: Conn, requester: Requester, text: str, limit: int, embedder: Embedder
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
    return [hit_from_row(r) for r in await cur.fetchall()]


RERANK_POOL = 4  # candidates fetched per result when a later stage re-orders them
RRF_K = 60  # reciprocal rank fusion's damping constant (the usual choice)


async def search(
    conn: Conn,
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
    hits = [hit_from_row(r) for r in await cur.fetchall()]
    if dense:
        assert embedder is not None
        hits = fuse([hits, await dense_search(conn, requester, text, fetch, embedder)])
        if not rerank:
            return hits[:limit]
    if rerank:
        return lexical_rerank(text, hits, limit)
    return hits


def hit_from_row(row: dict) -> Hit:
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
