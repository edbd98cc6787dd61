"""Variants of Parley's turn workflow, so the bench can measure a core change before it is made.

`python -m bench.launch worker` registers one of these as "Turn" in place of
`workflows.turn.TurnWorkflow` when `PARLEY_BENCH_TURN_VARIANT` names it. Workflow code
only (the sandbox imports this module).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from parley.turn_types import TurnInput, TurnOutcome, UserMessageInput

from workflows.turn import STORAGE_RETRY, TurnWorkflow


@workflow.defn(name="Turn")
class LocalPersistTurn(TurnWorkflow):
    """The user message persisted by a local activity.

    The shipped turn persists it with a regular activity, so the model call waits for an
    activity dispatch, its completion and one more workflow task. A local activity runs
    in the worker inside the first workflow task, which then schedules the model call at
    once: one server round trip fewer before the first token.
    """

    @workflow.run
    async def run(self, inp: TurnInput) -> TurnOutcome:
        return await super().run(inp)

    async def _persist_user_message(self, turn: str) -> None:
        await workflow.execute_local_activity(
            "persist_user_message",
            UserMessageInput(
                turn_id=turn,
                conversation_id=self.inp.conversation_id,
                participant_id=self.inp.user_participant_id,
                message_id=str(workflow.uuid4()),
                text=self.inp.message,
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=STORAGE_RETRY,
        )


VARIANTS: dict[str, type[TurnWorkflow]] = {"local-persist": LocalPersistTurn}
