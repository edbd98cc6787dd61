"""The model's view of a conversation, rebuilt from PostgreSQL on every model call.

The model activity reads the conversation itself (newest messages that fit a token
budget) plus the current turn's own steps (its tool calls and their results), so none of
it passes through workflow history.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from parley import prompts
from parley.attachments import Image
from parley.storage import attachments
from parley.storage.db import Conn

# A rough, tokenizer-free estimate: English runs ~4 characters per token.
CHARS_PER_TOKEN = 4
HISTORY_SCAN_LIMIT = 500
# What an image counts against the context budget: about what Claude charges for one at the
# size it scales images down to (~1.15 megapixels). Its bytes are not a measure.
IMAGE_TOKENS = 1600


def estimate_tokens(text: str) -> int:
    return len(text) // CHARS_PER_TOKEN + 1


async def conversation_messages(
    conn: Conn, conversation_id: str, budget_tokens: int
) -> list[dict[str, Any]]:
    """The most recent messages that fit `budget_tokens`, oldest first, roles alternating.

    A user message that came with images is a list of blocks, its images before its words
    (an image counts `IMAGE_TOKENS` against the budget); any other message is a string. The
    notice a stopped or failed turn left in place of its reply is not the model's: it is
    left out.
    """
    cur = await conn.execute(
        "select direction, text, turn_id, (select count(*) from attachments a"
        "  where a.turn_id = m.turn_id and a.kind = 'image' and m.direction = 'inbound') as images"
        " from messages m where conversation_id = %s and cut_short is null"
        " order by seq desc limit %s",
        (conversation_id, HISTORY_SCAN_LIMIT),
    )
    picked: list[tuple[str, str, str | None]] = []
    spent = 0
    for row in await cur.fetchall():
        cost = estimate_tokens(row["text"]) + row["images"] * IMAGE_TOKENS
        if picked and spent + cost > budget_tokens:
            break
        spent += cost
        role = "user" if row["direction"] == "inbound" else "assistant"
        picked.append((role, row["text"], row["turn_id"] if row["images"] else None))
    picked.reverse()
    images = await attachments.images_by_turn(conn, [t for _, _, t in picked if t])
    merged: list[tuple[str, list[Image], list[str]]] = []
    for role, text, turn in picked:
        if not merged and role == "assistant":
            continue  # the API wants a user message first
        if not merged or merged[-1][0] != role:
            merged.append((role, [], []))
        merged[-1][1].extend(images.get(turn, []) if turn else [])
        merged[-1][2].append(text)
    return [_message(role, shown, texts) for role, shown, texts in merged]


def _message(role: str, images: list[Image], texts: list[str]) -> dict[str, Any]:
    text = "\n\n".join(texts)
    if not images:
        return {"role": role, "content": text}
    blocks = [prompts.image_block(image) for image in images]
    return {"role": role, "content": [*blocks, {"type": "text", "text": text}]}


async def turn_steps(conn: Conn, turn_id: str, before_iteration: int) -> list[dict[str, Any]]:
    """The turn's assistant tool-use and tool-result messages of the iterations before
    `before_iteration`, in order (a retried call must not see the step it saved itself)."""
    cur = await conn.execute(
        "select iteration, kind, call_id, content from turn_steps"
        " where turn_id = %s and iteration < %s order by iteration, kind, created_at",
        (turn_id, before_iteration),
    )
    rows = await cur.fetchall()
    out: list[dict[str, Any]] = []
    for iteration in sorted({r["iteration"] for r in rows}):
        step = [r for r in rows if r["iteration"] == iteration]
        assistant = next((r for r in step if r["kind"] == "assistant"), None)
        if assistant is None:
            continue
        blocks = assistant["content"]["blocks"]
        out.append({"role": "assistant", "content": blocks})
        results = {r["call_id"]: r["content"] for r in step if r["kind"] == "tool_result"}
        result_blocks = [
            {"type": "tool_result", "tool_use_id": b["id"], **results[b["id"]]}
            for b in blocks
            if b.get("type") == "tool_use" and b["id"] in results
        ]
        if result_blocks:
            out.append({"role": "user", "content": result_blocks})
    return out


@dataclass(frozen=True)
class StepCall:
    """A tool call the turn's model made, and what the tool returned (None: no result)."""

    iteration: int
    id: str
    name: str
    arguments: dict[str, Any]
    result: str | None
    is_error: bool | None


async def turn_tool_calls(conn: Conn, turn_id: str) -> list[StepCall]:
    """Every tool call of the turn's steps, in the order the model made them."""
    cur = await conn.execute(
        "select iteration, kind, call_id, content from turn_steps"
        " where turn_id = %s order by iteration, kind, created_at",
        (turn_id,),
    )
    rows = await cur.fetchall()
    results = {
        (r["iteration"], r["call_id"]): r["content"] for r in rows if r["kind"] == "tool_result"
    }
    calls: list[StepCall] = []
    for row in rows:
        if row["kind"] != "assistant":
            continue
        for block in row["content"]["blocks"]:
            if block.get("type") != "tool_use":
                continue
            result = results.get((row["iteration"], block["id"]))
            calls.append(
                StepCall(
                    iteration=row["iteration"],
                    id=block["id"],
                    name=block["name"],
                    arguments=block.get("input") or {},
                    result=result["content"] if result else None,
                    is_error=result["is_error"] if result else None,
                )
            )
    return calls


async def save_assistant_step(
    conn: Conn, turn_id: str, iteration: int, blocks: list[dict[str, Any]]
) -> None:
    await conn.execute(
        "insert into turn_steps (turn_id, iteration, kind, content)"
        " values (%s, %s, 'assistant', %s)"
        " on conflict (turn_id, iteration, kind, call_id) do update set content = excluded.content",
        (turn_id, iteration, Jsonb({"blocks": blocks})),
    )


async def save_tool_result(
    conn: Conn, turn_id: str, iteration: int, call_id: str, content: str, is_error: bool
) -> None:
    await conn.execute(
        "insert into turn_steps (turn_id, iteration, kind, call_id, content)"
        " values (%s, %s, 'tool_result', %s, %s)"
        " on conflict (turn_id, iteration, kind, call_id) do update set content = excluded.content",
        (turn_id, iteration, call_id, Jsonb({"content": content, "is_error": is_error})),
    )
