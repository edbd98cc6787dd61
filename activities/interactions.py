"""Recording a raise tool's question (when the visitor's client can show it), and closing it
when nobody answers in time."""

from __future__ import annotations

from temporalio import activity

from parley.interactions.catalog import BY_TOOL
from parley.interactions.kinds import InvalidQuestion
from parley.storage import interactions, turns
from parley.storage.db import Pool
from parley.turn.types import InteractionInput, InteractionPark


class InteractionActivities:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    @activity.defn(name="record_interaction")
    async def record_interaction(self, inp: InteractionInput) -> InteractionPark:
        """Park on the call when its question can be shown; else the tool answers itself.

        The capabilities are the conversation's as they stand now (a later session may have
        declared others since the turn started)."""
        kind = BY_TOOL[inp.call.name]
        try:
            question = kind.question(inp.call.arguments)
        except InvalidQuestion:
            return InteractionPark(parked=False)
        async with self._pool.connection() as conn:
            if kind.capability not in await interactions.capabilities(conn, inp.conversation_id):
                return InteractionPark(parked=False)
            if await interactions.declined_before(conn, inp.turn_id, kind.name):
                return InteractionPark(parked=False)
            await interactions.record(
                conn,
                interaction_id=inp.interaction_id,
                turn_id=inp.turn_id,
                session_id=inp.session_id or await turns.session_of(conn, inp.turn_id),
                conversation_id=inp.conversation_id,
                request_id=inp.request_id,
                tool_call_id=inp.call.id,
                tool_name=inp.call.name,
                kind=kind.name,
                spec=question.spec,
                reason=question.reason,
                deadline=inp.deadline,
            )
        return InteractionPark(True, kind.name, question.spec, question.reason)

    @activity.defn(name="expire_interaction")
    async def expire_interaction(self, interaction_id: str) -> str:
        """Close the question; returns how it ended (an answer may have won the race)."""
        async with self._pool.connection() as conn:
            return await interactions.expire(conn, interaction_id)
