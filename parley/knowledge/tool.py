"""The built-in, read-only `knowledge_search` tool (never parks for approval).

It searches as the turn's requester, so the access filter is the same one grounding uses,
and records what it found as the turn's sources for the citations.
"""

from __future__ import annotations

from typing import Any

from parley.knowledge import access, search, sources
from parley.knowledge.embeddings import Embedder
from parley.tools import ToolRegistry, current_call

NAME = "knowledge_search"
MAX_LIMIT = 10

PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "query": {"type": "string", "minLength": 1, "description": "What to look up."},
        "limit": {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_LIMIT,
            "description": "How many passages to return (default 3).",
        },
    },
    "required": ["query"],
}


def register_knowledge_search(
    registry: ToolRegistry, *, rerank: bool = False, embedder: Embedder | None = None
) -> None:
    async def handler(args: dict[str, Any]) -> Any:
        call = current_call()
        assert call.connection is not None
        conn = call.connection
        hits = await search.search(
            conn,
            await access.requester(conn, call.org_id, call.user_id, call.groups),
            args["query"],
            limit=args.get("limit", 3),
            rerank=rerank,
            embedder=embedder,
        )
        if call.turn_id:
            await sources.record_sources(conn, call.turn_id, hits, "search")
        if not hits:
            return "No passage in the knowledge base matches this query."
        return [
            {
                "document": h.document_id,
                "title": h.title,
                "section": h.heading,
                "text": h.content,
                "score": round(h.score, 4),
            }
            for h in hits
        ]

    registry.register(
        NAME,
        "Search the company's knowledge base (policies, help articles) for passages relevant "
        "to a query. Use it when the question needs company facts you were not given.",
        PARAMETERS,
        handler,
        label="Help article search",
    )
