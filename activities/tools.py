"""Tool execution: one activity runs one tool call and records its result for the model.

A handler's exception, an unknown tool name (or one the turn's skill did not offer) and
arguments that fail the tool's schema all become error results the model reads (and the
client sees as `isError: true`), not activity failures: the turn goes on.

An approved write runs inside one transaction with its `tool_executions` row, keyed by
workflow id + tool call id: a retried activity finds the row and returns the recorded
result instead of running the handler again; a crash mid-handler rolls both back.
Denied and expired writes never reach the handler, nor does a raise tool's call the turn
parked on: its result is the visitor's answer (`parley.interactions.tools`).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from temporalio import activity

from activities.heartbeat import heartbeating
from activities.notify import announce
from activities.telemetry import tool_call
from parley.interactions.tools import result as interaction_result
from parley.logs import get_logger
from parley.storage import (
    approvals,
    attachments,
    context,
    interactions,
    tool_executions,
    visitors,
)
from parley.storage.db import Conn, Pool
from parley.tools import CallContext, ToolArgumentsError, ToolRegistry
from parley.turn.types import ToolCall, ToolInput, ToolOutput

log = get_logger(__name__)

# What the toolResult chunk shows; the model always gets the whole result.
MAX_SHOWN_CHARS = 4000

NOT_RUN = {
    "denied": "A person declined this action, so it was not performed.",
    "expired": "Nobody approved this action in time, so the approval expired and it was not"
    " performed.",
    "cancelled": "The conversation was stopped before anyone decided, so it was not performed.",
}


# The webhook event a parked write's verdict is announced as (a cancel is not announced).
ANNOUNCED = {"approved": "decided", "denied": "decided", "expired": "expired"}
TAMPERED = "The approval's record no longer matches its decision, so it was not performed."


class UnknownTool(LookupError):
    """The model called a tool this worker does not have."""


class ToolActivities:
    def __init__(self, pool: Pool, tools: ToolRegistry) -> None:
        self._pool = pool
        self._tools = tools

    @activity.defn(name="run_tool")
    @tool_call(lambda self: self._tools)
    async def run_tool(self, inp: ToolInput) -> ToolOutput:
        call = inp.call
        value: Any
        described: str | None = None
        async with heartbeating(), self._pool.connection() as conn:
            if inp.interaction_id is not None:
                outcome = await interactions.outcome(conn, inp.interaction_id)
                value, is_error = interaction_result(outcome), False
            elif inp.verdict in NOT_RUN:
                value, is_error = NOT_RUN[inp.verdict], True
            elif call.write:
                ctx = await _context(inp, conn)
                try:
                    approved = await approvals.approved_call(conn, inp.turn_id, call.id)
                except ValueError as err:  # the audit row was changed after the decision
                    log.error("approval does not match its decision", call=call.id, error=str(err))
                    value, is_error = TAMPERED, True
                else:
                    value, is_error = await self._execute_once(conn, inp, ctx, approved)
                    if approved is not None and approved.edited:
                        value = _edited(call.name, approved, value)
                        described = await self._redescribe(conn, call.name, approved)
            else:
                value, is_error = await self._invoke(call, await _context(inp, conn))
            if inp.verdict in ANNOUNCED:
                approval = await approvals.approval_of_call(conn, inp.turn_id, call.id)
                if approval is not None:
                    await announce(conn, approval, ANNOUNCED[inp.verdict])
            text = _as_text(value)
            await context.save_tool_result(
                conn, inp.turn_id, inp.iteration, call.id, text, is_error
            )
        shown = value if len(text) <= MAX_SHOWN_CHARS else text[:MAX_SHOWN_CHARS] + "…"
        return ToolOutput(is_error=is_error, result=shown, description=described)

    async def _execute_once(
        self,
        conn: Conn,
        inp: ToolInput,
        ctx: CallContext,
        approved: approvals.Approved | None = None,
    ) -> tuple[Any, bool]:
        """Run the write once, with exactly the arguments its approver approved (an
        approver may have edited them), recorded with the decision's hash."""
        workflow_id, call = inp.turn_id, inp.call
        if approved is not None and approved.edited:
            call = dataclasses.replace(call, arguments=approved.arguments)
        async with conn.transaction():
            done = await tool_executions.recorded(conn, workflow_id, call.id)
            if done is not None:
                log.info("write already executed", tool=call.name, call=call.id)
                return done
            try:
                async with conn.transaction():  # a failing handler leaves no partial writes
                    value, is_error = await self._call(call, ctx), False
            except Exception as err:
                value, is_error = self._failure(call, ctx, err), True
            await tool_executions.record(
                conn,
                workflow_id=workflow_id,
                tool_call_id=call.id,
                tool_name=call.name,
                arguments=call.arguments,
                result=value,
                is_error=is_error,
                decision_hash=approved.decision_hash if approved is not None else None,
            )
        return value, is_error

    async def _redescribe(self, conn: Conn, name: str, approved: approvals.Approved) -> str | None:
        """The approval's sentence, rebuilt for the arguments its approver approved: the
        reply's record and the visitor's card say what ran, not what was asked."""
        tool = self._tools.get(name)
        if tool is None:
            return None
        description = tool.action_description(approved.arguments)
        await approvals.set_description(conn, approved.approval_id, description)
        return description

    async def _invoke(self, call: ToolCall, ctx: CallContext) -> tuple[Any, bool]:
        try:
            return await self._call(call, ctx), False
        except Exception as err:
            return self._failure(call, ctx, err), True

    async def _call(self, call: ToolCall, ctx: CallContext) -> Any:
        tool = self._tools.get(call.name) if call.offered else None
        if tool is None:
            raise UnknownTool(call.name)
        return await tool.invoke(call.arguments, ctx)

    @staticmethod
    def _failure(call: ToolCall, ctx: CallContext, err: Exception) -> str:
        """The error result the model (and the toolResult chunk) sees."""
        if isinstance(err, UnknownTool):
            return f"unknown tool '{call.name}'"
        if isinstance(err, ToolArgumentsError):
            return f"invalid arguments for {call.name}: {err}"
        log.error("tool failed", tool=call.name, call=ctx.call_key, exc_info=err)
        return f"{call.name} failed: {type(err).__name__}: {err}"


async def _context(inp: ToolInput, conn: Conn) -> CallContext:
    return CallContext(
        call_key=f"{inp.turn_id}:{inp.call.id}",
        connection=conn,
        turn_id=inp.turn_id,
        org_id=inp.org_id,
        user_id=inp.user_id,
        groups=inp.groups,
        files=tuple(await attachments.turn_files(conn, inp.turn_id)),
        identity=await visitors.identity_of_turn(conn, inp.turn_id),
    )


def _edited(name: str, approved: approvals.Approved, value: Any) -> str:
    """The result the model reads when the approver changed the arguments: what changed,
    the approver's note, then the tool's own result."""
    changes = [
        f"{key}: {json.dumps(approved.requested.get(key), default=str)} ->"
        f" {json.dumps(approved.arguments.get(key), default=str)}"
        for key in sorted(set(approved.requested) | set(approved.arguments))
        if approved.requested.get(key) != approved.arguments.get(key)
    ]
    note = f" Their note: {approved.note}" if approved.note else ""
    return (
        f"[The person who approved {name} changed its arguments ({'; '.join(changes)}); it ran"
        f" with the approved arguments {json.dumps(approved.arguments, default=str)}.{note}]\n"
        f"{_as_text(value)}"
    )


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)
