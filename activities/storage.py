"""The last persistence step of a turn: the reply and the slot. Idempotent, so a retried
activity changes nothing twice. (The first model call stores the user message; a turn
that ends without one stores it here.)

The reply is stored with its record (`parley.turn.record`): what a client needs to show it
again after a reload, read from what PostgreSQL already holds about the turn. A turn that
ends without a reply fills in the record of the agent message it left in its place.
"""

from __future__ import annotations

from temporalio import activity

from parley.knowledge import sources
from parley.storage import approvals, context, escalations, interactions, messages, turns
from parley.storage.db import Conn, Pool
from parley.turn.record import (
    MAX_CALLS,
    RecordedCall,
    ReplyRecord,
    ReplyStatus,
    bounded_arguments,
    bounded_result,
    cut_short,
    split_paragraphs,
)
from parley.turn.types import FinishInput, FinishOutput, TurnStatus


class StorageActivities:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    @activity.defn(name="finish_turn")
    async def finish_turn(self, inp: FinishInput) -> FinishOutput:
        """Release the slot with `inp.status` (persisting the reply when completed).

        Returns the turn's final status, and its citations and escalation when it
        completed: a turn already released by a `cancel` stays cancelled, and its late
        reply is not persisted.
        """
        async with self._pool.connection() as conn, conn.transaction():
            if inp.user_message is not None:  # idempotent: the model call may have stored it
                await messages.add_user_message(
                    conn, inp.conversation_id, inp.turn_id, inp.user_message
                )
            released = await turns.finish(conn, inp.turn_id, inp.status)
            status: TurnStatus = inp.status
            if not released:  # released before: by a cancel, or by this activity's earlier attempt
                status = await turns.status(conn, inp.turn_id) or "abandoned"
            cut = cut_short(status)
            record = await reply_record(conn, inp, cut or "completed")
            if cut is not None:
                await messages.put_cut_short(conn, inp.turn_id, cut, record.to_json())
                return FinishOutput(status)
            if released:
                await messages.add_message(
                    conn,
                    conversation_id=inp.conversation_id,
                    participant_id=inp.participant_id,
                    direction="outbound",
                    text=inp.text,
                    turn_id=inp.turn_id,
                    message_id=inp.message_id,
                    structured=record.to_json(),
                )
            return FinishOutput("completed", record.citations, record.escalation_reason)


async def reply_record(conn: Conn, inp: FinishInput, status: ReplyStatus) -> ReplyRecord:
    """The turn's record from its sources, steps, decisions and escalation.

    A tool call is kept when it returned or a person was asked about it: the ones the turn
    never ran (cut off at the output limit, over the token budget) were not shown either.
    A completed reply with tool calls also keeps each model call's text, so a reload shows
    text and tools in the order they happened.
    """
    steps = await context.turn_tool_calls(conn, inp.turn_id)
    order = {c.id: i for i, c in enumerate(steps)}
    decisions = await approvals.turn_decisions(conn, inp.turn_id)
    decisions += await interactions.turn_decisions(conn, inp.turn_id)
    decisions.sort(key=lambda d: order.get(d.tool_call_id, len(order)))  # as they were asked
    asked = {d.tool_call_id for d in decisions}
    calls = [
        RecordedCall(
            id=c.id,
            name=c.name,
            arguments=bounded_arguments(c.arguments),
            is_error=c.is_error,
            result=bounded_result(c.result) if c.result is not None else None,
            iteration=c.iteration,
        )
        for c in steps
        if c.result is not None or c.id in asked
    ]
    return ReplyRecord(
        status=status,
        citations=await sources.turn_citations(conn, inp.turn_id),
        tool_calls=calls[:MAX_CALLS],
        decisions=decisions[:MAX_CALLS],
        escalation_reason=await escalations.turn_reason(conn, inp.turn_id),
        truncated=inp.truncated if status == "completed" else None,
        texts=split_paragraphs(inp.text, inp.text_lengths)
        if calls and status == "completed"
        else [],
    )
