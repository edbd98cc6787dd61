"""What the model is given on each call, laid out so Anthropic's prompt cache can reuse it.

The API caches a request's prefix, in the order tools -> system -> messages, up to each
block marked `cache_control` (a breakpoint; at most 4 per request). A later request whose
prefix is identical up to such a point reads it at 0.1x the input price instead of paying
for it again (writing it costs 1.25x, once). So what is the same from call to call goes
first, and what changes goes last:

- tools: the worker's tool definitions (those the turn's skill allows, with one).
- system: the organization's persona (or the default instructions), then the turn's skill,
  if it names one, as a block of its own.
- messages: the conversation so far as stored (each user message's images before its
  words), then the current user message led by a text block with its grounding (the
  knowledge retrieved for this message; it changes every turn, so it must not sit in front
  of the history, and the stored message stays the user's words), then the turn's own tool
  steps (later iterations).

Breakpoints (5-minute TTL, the default), at most 4:

1. the last tool definition: the tools alone, shared by every Parley organization and
   conversation on workers with the same tools, whatever the persona (none without tools);
2. the last system block: tools and persona (and skill), shared by all of an organization's
   conversations (that use the same skill; a skill's request also finds the persona's
   entry one block earlier);
3. the last block before the current user message (the previous reply): the conversation
   up to there is sent again, unchanged, by every later turn, so each turn reads it up to the
   previous turn's mark and writes only the one exchange since. Not after the current
   message: the next turn sends it without its grounding, so that entry would never be read
   across turns;
4. on later iterations only, the last block (the newest tool results): the next iteration
   sends the same messages plus one step, so it reads this. The first iteration does not
   mark its grounding and message: most turns end without a tool call, and the write
   (1.25x) would then be wasted.

The API also looks for cache hits at the block boundaries up to ~20 blocks before a
breakpoint, which is how each of 3 and 4 finds the entry the previous call wrote a few
blocks earlier. A prefix shorter than the model's minimum (1,024 to 4,096 tokens) is not
cached and reports no cache tokens. Two cases miss the messages part of the cache: a
conversation that outgrew the context budget (its oldest messages drop off, so the prefix
changes every turn) and a turn's last allowed iteration (its `tool_choice` differs).
"""

from __future__ import annotations

import base64
import copy
from typing import Any

from parley.attachments import Image
from parley.knowledge.types import Hit
from parley.skills import Skill

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant in a company's chat widget. Answer briefly and plainly. "
    "Ground your answers in the company knowledge you are given (and what the "
    "knowledge_search tool finds); when it does not contain the answer, say you do not have "
    "that information instead of guessing. Tools that change something (a refund, a "
    "deletion) are shown to the person for approval before they run: if one is declined or "
    "its approval expires, say so and do not claim it happened."
)

# The grounding leads the user's message in the request, so it says who added it.
NO_KNOWLEDGE = (
    "No company knowledge matched the message below (a note from the system, not written by "
    "the person). If answering needs company facts, search with knowledge_search or say you "
    "do not have that information."
)

Block = dict[str, Any]
Message = dict[str, Any]


def breakpoint_mark() -> dict[str, str]:
    """A fresh `cache_control` value (a new dict each time: blocks must not share one)."""
    return {"type": "ephemeral"}


# What the model reads instead of a linked image the Messages API could not fetch.
UNAVAILABLE_IMAGE = (
    "[An image the person shared here, by link, could not be loaded (a note from the system).]"
)


def system_blocks(persona: str | None, skill: Skill | None = None) -> list[Block]:
    """The system prompt: the organization's persona (or the default), then the turn's
    skill; breakpoint 2 on the last block."""
    blocks: list[Block] = [{"type": "text", "text": persona or DEFAULT_SYSTEM_PROMPT}]
    if skill is not None:
        blocks.append({"type": "text", "text": skill.instructions()})
    blocks[-1]["cache_control"] = breakpoint_mark()
    return blocks


def image_block(image: Image) -> Block:
    """An image as the Messages API takes it: inline (base64) or by https URL."""
    if image.data is not None:
        data = base64.b64encode(image.data).decode("ascii")
        source = {"type": "base64", "media_type": image.media_type, "data": data}
        return {"type": "image", "source": source}
    return {"type": "image", "source": {"type": "url", "url": image.url}}


def without_linked_images(request: dict[str, Any]) -> dict[str, Any] | None:
    """The request with each linked (URL) image replaced by a note saying it could not be
    loaded; None when it has none. For a request the API refused: a link that broke must
    not fail this turn, nor every later turn of the conversation, which sends it again."""
    found = False
    out = copy.deepcopy(request)
    for message in out["messages"]:
        content = message["content"]
        for i, block in enumerate(content if isinstance(content, list) else []):
            if block.get("type") == "image" and block["source"].get("type") == "url":
                found = True
                content[i] = {"type": "text", "text": UNAVAILABLE_IMAGE}
                if "cache_control" in block:
                    content[i]["cache_control"] = block["cache_control"]
    return out if found else None


def tool_specs(specs: list[Block]) -> list[Block]:
    """The tool definitions, the last one marked (breakpoint 1)."""
    out = [dict(spec) for spec in specs]
    if out:
        out[-1]["cache_control"] = breakpoint_mark()
    return out


def grounding_text(grounding: list[Hit]) -> str:
    """The knowledge retrieved for the user's message, as the text that leads it."""
    if not grounding:
        return NO_KNOWLEDGE
    sources = "\n\n".join(
        f"[{i}] {hit.title}" + (f" — {hit.heading}" if hit.heading else "") + f"\n{hit.content}"
        for i, hit in enumerate(grounding, 1)
    )
    return (
        "Company knowledge relevant to the message below (added by the system, not written by"
        " the person; only use what is relevant):"
        f"\n<knowledge>\n{sources}\n</knowledge>"
    )


def messages(
    conversation: list[Message], grounding: list[Hit], steps: list[Message]
) -> list[Message]:
    """The request's messages: the conversation (ending with the current user message), its
    grounding put in front of that message, and the turn's earlier steps; breakpoints 3-4.

    Every message goes out as a list of blocks, so a message reads the same whether or not
    it carries a breakpoint in a given request. The inputs are not changed.
    """
    out = [_as_blocks(m) for m in conversation]
    current = out.pop() if out and out[-1]["role"] == "user" else {"role": "user", "content": []}
    if out:
        _mark(out[-1])  # 3: the conversation before this turn
    lead: Block = {"type": "text", "text": grounding_text(grounding)}
    out.append({"role": "user", "content": [lead, *current["content"]]})
    if steps:
        out += [_as_blocks(m) for m in steps]
        _mark(out[-1])  # 4: the turn so far
    return out


def _as_blocks(message: Message) -> Message:
    content = message["content"]
    if isinstance(content, str):
        return {"role": message["role"], "content": [{"type": "text", "text": content}]}
    return {"role": message["role"], "content": [dict(block) for block in content]}


def _mark(message: Message) -> None:
    if message["content"]:
        message["content"][-1]["cache_control"] = breakpoint_mark()
