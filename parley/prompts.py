"""The system prompt a turn starts from, and how retrieved knowledge is put into it."""

from __future__ import annotations

from parley.knowledge.types import Hit

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant in a company's chat widget. Answer briefly and plainly. "
    "Ground your answers in the company knowledge you are given (and what the "
    "knowledge_search tool finds); when it does not contain the answer, say you do not have "
    "that information instead of guessing. Tools that change something (a refund, a "
    "deletion) are shown to the person for approval before they run: if one is declined or "
    "its approval expires, say so and do not claim it happened."
)

NO_KNOWLEDGE = (
    "No company knowledge matched this message. If answering needs company facts, search "
    "with knowledge_search or say you do not have that information."
)


def system_prompt(persona: str | None, grounding: list[Hit]) -> str:
    """The organization's persona (or the default) followed by the grounding context."""
    base = persona or DEFAULT_SYSTEM_PROMPT
    if not grounding:
        return f"{base}\n\n{NO_KNOWLEDGE}"
    sources = "\n\n".join(
        f"[{i}] {hit.title}" + (f" — {hit.heading}" if hit.heading else "") + f"\n{hit.content}"
        for i, hit in enumerate(grounding, 1)
    )
    return (
        f"{base}\n\nCompany knowledge relevant to this message (only use what is relevant):"
        f"\n<knowledge>\n{sources}\n</knowledge>"
    )
