"""What a turn drew on: its grounding and the search results its tools read, recorded so
later model calls reuse the grounding and the reply carries citations."""

from __future__ import annotations

from typing import Literal

from parley.knowledge.search import hit_from_row
from parley.knowledge.types import Hit
from parley.storage.db import Conn
from parley.turn.events import Citation

MAX_CITATIONS = 8


async def record_sources(
    conn: Conn, turn_id: str, hits: list[Hit], origin: Literal["grounding", "search"]
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


async def turn_grounding(conn: Conn, turn_id: str) -> list[Hit]:
    """The grounding recorded by the turn's first model call."""
    cur = await conn.execute(
        "select document_id, title, source, heading, content, score from turn_sources"
        " where turn_id = %s and origin = 'grounding' order by score desc, created_at",
        (turn_id,),
    )
    return [hit_from_row(r) for r in await cur.fetchall()]


async def turn_citations(conn: Conn, turn_id: str) -> list[Citation]:
    """The turn's citations: grounding and search results, one per document, best first."""
    cur = await conn.execute(
        "select distinct on (document_id) document_id, title, source, heading, content, score"
        " from turn_sources where turn_id = %s order by document_id, score desc",
        (turn_id,),
    )
    hits = sorted((hit_from_row(r) for r in await cur.fetchall()), key=lambda h: -h.score)
    return [
        Citation(h.document_id, h.title, h.snippet, round(h.score, 4), h.url)
        for h in hits[:MAX_CITATIONS]
    ]
