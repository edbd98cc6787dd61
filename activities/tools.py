"""Tool execution: one activity runs one tool call and records its result for the model.

A handler's exception, an unknown tool name and arguments that fail the tool's schema all
become error results the model reads (and the client sees as `isError: true`), not
activity failures: the turn goes on.
"""

from __future__ import annotations

import json
from typing import Any

from psycopg_pool import AsyncConnectionPool
from temporalio import activity

from parley import context
from parley.logs import get_logger
from parley.tools import ToolArgumentsError, ToolRegistry
from parley.turn_types import ToolInput, ToolOutput

log = get_logger(__name__)

# What the toolResult chunk shows; the model always gets the whole result.
MAX_SHOWN_CHARS = 4000


class ToolActivities:
    def __init__(self, pool: AsyncConnectionPool, tools: ToolRegistry) -> None:
        self._pool = pool
        self._tools = tools

    @activity.defn(name="run_tool")
    async def run_tool(self, inp: ToolInput) -> ToolOutput:
        call = inp.call
        value, is_error = await self._invoke(call.name, call.arguments, inp.turn_id)
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        async with self._pool.connection() as conn:
            await context.save_tool_result(
                conn, inp.turn_id, inp.iteration, call.id, text, is_error
            )
        shown = value if len(text) <= MAX_SHOWN_CHARS else text[:MAX_SHOWN_CHARS] + "…"
        return ToolOutput(is_error=is_error, result=shown)

    async def _invoke(self, name: str, arguments: dict[str, Any], turn: str) -> tuple[Any, bool]:
        tool = self._tools.get(name)
        if tool is None:
            return f"unknown tool '{name}'", True
        try:
            return await tool.invoke(arguments), False
        except ToolArgumentsError as err:
            return f"invalid arguments for {name}: {err}", True
        except Exception as err:
            log.exception("tool failed", tool=name, turn=turn)
            return f"{name} failed: {type(err).__name__}: {err}", True
