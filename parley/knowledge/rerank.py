"""The optional lexical rerank stage (`PARLEY_RERANK=lexical`).

Full-text rank favours chunks that repeat a term; this re-orders an over-fetched candidate
set by how many *distinct* query terms a chunk covers, and whether its heading names
them, keeping the full-text score as a tie-breaker.
"""

from __future__ import annotations

from dataclasses import replace

from parley.knowledge.text import terms
from parley.knowledge.types import Hit


def lexical_rerank(query: str, hits: list[Hit], limit: int) -> list[Hit]:
    wanted = terms(query)
    if not wanted or not hits:
        return hits[:limit]
    top = max(h.score for h in hits) or 1.0

    def score(hit: Hit) -> float:
        body = terms(hit.content)
        heading = terms(f"{hit.title} {hit.heading}")
        coverage = len(wanted & (body | heading)) / len(wanted)
        heading_cover = len(wanted & heading) / len(wanted)
        return 0.6 * coverage + 0.2 * heading_cover + 0.2 * hit.score / top

    rescored = [replace(h, score=round(score(h), 6)) for h in hits]
    return sorted(rescored, key=lambda h: -h.score)[:limit]
