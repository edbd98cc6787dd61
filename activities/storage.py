"""The last persistence step of a turn: the reply and the slot. Idempotent, so a retried
activity changes nothing twice. (The first model call stores the user message; a turn
that ends without one stores it here.)"""

from __future__ import annotations

from temporalio import activity

from parley.knowledge import sources
from parley.storage import messages, turns
from parley.storage.db import Pool
from parley.turn.types import FinishInput, FinishOutput, TurnStatus


class StorageActivities:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    @activity.defn(name="finish_turn")
    async def finish_turn(self, inp: FinishInput) -> FinishOutput:
        """Release the slot with `inp.status` (persisting the reply when completed).

        Returns the turn's final status, and its citations when it completed: a turn
        already released by a `cancel` stays cancelled, and its late reply is not persisted.
        """
        async with self._pool.connection() as conn, conn.transaction():
            if inp.user_message is not None:  # idempotent: the model call may have stored it
                await messages.add_user_message(
                    conn, inp.conversation_id, inp.turn_id, inp.user_message
                )
            if await turns.finish(conn, inp.turn_id, inp.status):
                status: TurnStatus = inp.status
                if status == "completed":
                    await messages.add_message(
                        conn,
                        conversation_id=inp.conversation_id,
                        participant_id=inp.participant_id,
                        direction="outbound",
                        text=inp.text,
                        turn_id=inp.turn_id,
                        message_id=inp.message_id,
                    )
            else:  # released before: by a cancel, or by this activity's earlier attempt
                status = await turns.status(conn, inp.turn_id) or "abandoned"
            if status != "completed":
                return FinishOutput(status)
            return FinishOutput("completed", await sources.turn_citations(conn, inp.turn_id))
