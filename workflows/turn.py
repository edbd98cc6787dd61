"""The turn workflow: one `send_message`, from the user's words to the persisted reply.

Up to `max_iterations` x (model call -> tool calls) -> persist the reply and release the
session's slot -> publish the terminal event. The first model call stores the user message
(idempotently, under an id the workflow chose) in the same database session that reads the
context: one activity round trip fewer before the first token than a separate step.

The workflow owns the turn's event stream (Workflow Streams): the model activity publishes
text deltas into it, the workflow publishes tool chunks and the terminal event, and any
gateway subscribes.

Only ids and short strings pass through history; the model activity reads the conversation
from PostgreSQL.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.contrib.workflow_streams import WorkflowStream
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from parley.turn.pricing import cost_usd
    from parley.turn.types import (
        EVENTS_TOPIC,
        ApprovalInput,
        FinishInput,
        FinishOutput,
        ModelInput,
        ModelOutput,
        ToolCall,
        ToolInput,
        ToolOutput,
        TurnEvent,
        TurnInput,
        TurnOutcome,
        Usage,
        UserMessage,
        Verdict,
    )

MODEL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=20),
    maximum_attempts=6,
)
STORAGE_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_attempts=20)
TOOL_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=5)


@workflow.defn(name="Turn")
class TurnWorkflow:
    @workflow.init
    def __init__(self, inp: TurnInput) -> None:
        self.stream = WorkflowStream()
        self.events = self.stream.topic(EVENTS_TOPIC, type=TurnEvent)
        self.inp = inp
        self.verdicts: dict[str, bool] = {}

    @workflow.run
    async def run(self, inp: TurnInput) -> TurnOutcome:
        turn = workflow.info().workflow_id
        self.user_message = UserMessage(
            self.inp.user_participant_id, str(workflow.uuid4()), self.inp.message
        )
        try:
            text, usage = await self._agent_loop(turn)
            message_id = str(workflow.uuid4())
            finished = await self._finish(turn, "completed", text, message_id)
            if finished.status != "completed":  # a cancel released the slot first
                self.events.publish(TurnEvent("cancelled"))
                return TurnOutcome(finished.status)
            done = self._done(message_id, text, usage, finished.citations)
            self.events.publish(TurnEvent("done", done))
            return TurnOutcome("completed", message_id)
        except asyncio.CancelledError:
            await self._end_cancelled(turn)
            raise
        except ActivityError as err:
            if isinstance(err.cause, CancelledError):
                await self._end_cancelled(turn)
                raise
            await self._end_failed(turn, err)
            return TurnOutcome("failed")

    async def _end_cancelled(self, turn: str) -> None:
        await self._finish(turn, "cancelled")
        self.events.publish(TurnEvent("cancelled"))

    async def _end_failed(self, turn: str, err: ActivityError) -> None:
        """Release the slot, then tell the client why (a key problem as LLM_UNAVAILABLE)."""
        cause = err.cause
        reason = cause.message if isinstance(cause, ApplicationError) else str(err)
        unavailable = isinstance(cause, ApplicationError) and cause.type == "LlmUnavailable"
        workflow.logger.warning("turn failed: %s", reason)
        await self._finish(turn, "failed")
        self.events.publish(
            TurnEvent(
                "error",
                {
                    "code": "LLM_UNAVAILABLE" if unavailable else "AGENT_ERROR",
                    "message": reason if unavailable else f"agent turn failed: {reason}",
                },
            )
        )

    async def _agent_loop(self, turn: str) -> tuple[str, Usage]:
        """Model calls and tool calls until the model answers without tools.

        The last allowed iteration runs with tools disabled, so the turn ends with words.
        """
        parts: list[str] = []
        usage = Usage()
        for iteration in range(self.inp.max_iterations):
            last = iteration == self.inp.max_iterations - 1
            output = await workflow.execute_activity(
                "call_model",
                ModelInput(
                    turn_id=turn,
                    conversation_id=self.inp.conversation_id,
                    org_id=self.inp.org_id,
                    user_id=self.inp.user_id,
                    model=self.inp.model,
                    iteration=iteration,
                    stream=self.inp.stream,
                    allow_tools=not last,
                    user_message=self.user_message if iteration == 0 else None,
                ),
                result_type=ModelOutput,
                start_to_close_timeout=timedelta(minutes=10),
                heartbeat_timeout=timedelta(seconds=5),
                retry_policy=MODEL_RETRY,
            )
            usage.add(output.usage)
            parts.append(output.text)
            if not output.tool_calls or last:
                break
            for call in output.tool_calls:
                await self._run_tool(turn, iteration, call)
        return "".join(parts), usage

    async def _run_tool(self, turn: str, iteration: int, call: ToolCall) -> None:
        verdict = None
        if call.write:
            verdict = await self._park(turn, call)
        else:
            self._publish_call(call)
        result = await workflow.execute_activity(
            "run_tool",
            ToolInput(
                turn_id=turn,
                iteration=iteration,
                call=call,
                org_id=self.inp.org_id,
                user_id=self.inp.user_id,
                verdict=verdict,
            ),
            result_type=ToolOutput,
            start_to_close_timeout=timedelta(minutes=5),
            heartbeat_timeout=timedelta(seconds=5),
            retry_policy=TOOL_RETRY,
        )
        self.events.publish(
            TurnEvent(
                "tool_result",
                {
                    "id": call.id,
                    "name": call.name,
                    "isError": result.is_error,
                    "result": result.result,
                },
            )
        )

    def _publish_call(self, call: ToolCall) -> None:
        self.events.publish(
            TurnEvent("tool_call", {"id": call.id, "name": call.name, "arguments": call.arguments})
        )

    @workflow.signal(name="verdict")
    def verdict(self, verdict: Verdict) -> None:
        """A person's claimed decision, delivered by the gateway that won the claim."""
        self.verdicts.setdefault(verdict.approval_id, verdict.approved)

    async def _park(self, turn: str, call: ToolCall) -> str:
        """Ask a person, and wait (durably) for their verdict or the deadline.

        Returns approved | denied | expired. The database holds the one decision: at the
        deadline the expiry only wins if no confirm claimed the approval first.
        """
        approval_id = str(workflow.uuid4())
        timeout = timedelta(seconds=self.inp.approval_timeout_seconds)
        await workflow.execute_activity(
            "record_approval",
            ApprovalInput(
                approval_id=approval_id,
                turn_id=turn,
                session_id=self.inp.session_id,
                request_id=self.inp.request_id,
                call=call,
                deadline=workflow.now() + timeout,
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=STORAGE_RETRY,
        )
        self.events.publish(
            TurnEvent(
                "confirm",
                {
                    "approvalId": approval_id,
                    "toolId": call.name,
                    "actionDescription": call.description,
                },
            )
        )
        self._publish_call(call)
        try:
            await workflow.wait_condition(
                lambda: approval_id in self.verdicts, timeout=timeout, timeout_summary="approval"
            )
        except TimeoutError:
            return await workflow.execute_activity(
                "expire_approval",
                approval_id,
                result_type=str,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=STORAGE_RETRY,
            )
        return "approved" if self.verdicts[approval_id] else "denied"

    async def _finish(
        self, turn: str, status: str, text: str = "", message_id: str = ""
    ) -> FinishOutput:
        """Release the slot (and store the reply); a turn that did not complete also
        stores the user message, which a cancel or failure may have reached first."""
        return await workflow.execute_activity(
            "finish_turn",
            FinishInput(
                turn_id=turn,
                conversation_id=self.inp.conversation_id,
                participant_id=self.inp.agent_participant_id,
                message_id=message_id,
                text=text,
                status=status,
                user_message=self.user_message if status != "completed" else None,
            ),
            result_type=FinishOutput,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=STORAGE_RETRY,
        )

    def _done(self, message_id: str, text: str, usage: Usage, citations: list[dict]) -> dict:
        done = {
            "messageId": message_id,
            "text": text,
            "usage": {
                "costUsd": cost_usd(self.inp.model, usage.input_tokens, usage.output_tokens),
                "promptTokens": usage.input_tokens,
                "completionTokens": usage.output_tokens,
            },
        }
        if citations:
            done["citations"] = citations
        return done
