"""The turn workflow: one `send_message`, from the user's words to the persisted reply.

Up to `max_iterations` x (model call -> tool calls), within the turn's token budget ->
persist the reply and release the session's slot -> publish the terminal event. The first
model call stores the user message (idempotently, under an id the workflow chose) in the
same database session that reads the context: one activity round trip fewer before the
first token than a separate step.

The workflow owns the turn's event stream (Workflow Streams): the model activity publishes
text deltas into it, the workflow publishes tool chunks and the terminal event, and any
gateway subscribes.

Only ids and short strings pass through history; the model activity reads the conversation
from PostgreSQL.

A turn never wedges its session: whatever fails (an activity, or a bug in this code), the
slot is released and the client gets a terminal event. Changes to the sequence of commands
this workflow issues must be guarded by `workflow.patched` (tests/test_replay.py replays
recorded histories of every kind of turn).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.contrib.workflow_streams import WorkflowStream
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from activities.approvals import ApprovalActivities
    from activities.interactions import InteractionActivities
    from activities.model import LLM_UNAVAILABLE, ModelActivities
    from activities.storage import StorageActivities
    from activities.tools import ToolActivities
    from parley.interactions.catalog import RAISE_TOOLS
    from parley.protocol import ErrorCode
    from parley.turn.events import (
        EVENTS_TOPIC,
        TURN_EVENT,
        ApprovalAsked,
        Cancelled,
        Done,
        Failed,
        InteractionAsked,
        Token,
        ToolCallStarted,
        ToolResult,
        TurnEvent,
        TurnUsage,
    )
    from parley.turn.record import join_paragraphs, paragraph_lengths
    from parley.turn.types import (
        Answered,
        ApprovalDue,
        ApprovalInput,
        Decision,
        EndStatus,
        Extension,
        FinishInput,
        FinishOutput,
        InteractionInput,
        ModelInput,
        ToolCall,
        ToolInput,
        TurnInput,
        TurnOutcome,
        Usage,
        UserMessage,
        Verdict,
    )

ArgT = TypeVar("ArgT")
ResultT = TypeVar("ResultT")


@dataclass(frozen=True)
class Policy:
    """How long one kind of activity may take, and how it is retried."""

    start_to_close: timedelta
    retry: RetryPolicy
    heartbeat: timedelta | None = None


MODEL_CALL = Policy(
    start_to_close=timedelta(minutes=10),
    heartbeat=timedelta(seconds=5),
    retry=RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=20),
        maximum_attempts=6,
    ),
)
TOOL_CALL = Policy(
    start_to_close=timedelta(minutes=5),
    heartbeat=timedelta(seconds=5),
    retry=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=5),
)
STORAGE = Policy(
    start_to_close=timedelta(seconds=30),
    retry=RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_attempts=20),
)

# Appended to a reply the model stopped at its output limit (PARLEY_MAX_TOKENS): the
# reader must know the answer is incomplete, and an incomplete tool call is never run.
TRUNCATED_NOTICE = "\n\n[This reply was cut short: it reached the length limit.]"
# Appended when the turn's model calls have spent its token budget (PARLEY_TURN_TOKEN_BUDGET)
# while the model still wanted tools: the turn stops there, and the tools are not run.
BUDGET_NOTICE = "\n\n[This reply was cut short: it reached this turn's token budget.]"
TOKEN_BUDGET_PATCH = "turn-token-budget"
# At the deadline, expire only when PostgreSQL's deadline has passed too (an extension whose
# signal has not arrived moved it later); turns that expired before it replay the old path.
EXPIRY_PATCH = "approval-expiry-honours-db"
# The least wait before asking PostgreSQL again when it holds a later deadline: the worker's
# and the database's clocks may disagree by a little, and each ask is an activity.
RECHECK = timedelta(seconds=1)
# A reply whose model calls each said something is joined with blank lines, not glued.
PARAGRAPHS_PATCH = "reply-paragraphs"


# Not sandboxed: this module imports only dataclasses and the activity classes (passed
# through), uses no clock, randomness or I/O outside the SDK's, and its determinism is held
# by tests/test_replay.py. The sandbox's per-activation cost sat on the path to the first
# token (its first activation ~12 ms of a 38 ms time to first token at one session).
@workflow.defn(name="Turn", sandboxed=False)
class TurnWorkflow:
    @workflow.init
    def __init__(self, inp: TurnInput) -> None:
        self.stream = WorkflowStream()
        self.events = self.stream.topic(EVENTS_TOPIC, type=TURN_EVENT)
        self.inp = inp
        self.decisions: dict[str, bool] = {}
        self.extended: dict[str, datetime] = {}  # approvals' deadlines the desk moved later
        self.answered: set[str] = set()  # interactions a visitor answered
        self.published = 0  # items this workflow published (model calls publish their own)
        self.truncated: Literal["length", "budget"] | None = None  # what ended the reply early
        self.texts: list[str] = []  # each model call's text, by iteration

    @workflow.run
    async def run(self, inp: TurnInput) -> TurnOutcome:
        outcome = await self._turn()
        # Stay open a little after the terminal event: a client that reloads right after the
        # last token re-attaches (`resume_turn`) and reads the turn from its stream, which
        # only a running workflow serves. Costs one timer; 0 turns it off.
        if self.inp.linger_seconds > 0:
            await workflow.sleep(self.inp.linger_seconds, summary="linger")
        return outcome

    async def _turn(self) -> TurnOutcome:
        turn = workflow.info().workflow_id
        self.user_message = UserMessage(
            self.inp.user_participant_id, str(workflow.uuid4()), self.inp.message
        )
        try:
            text, usage = await self._agent_loop(turn)
            message_id = str(workflow.uuid4())
            finished = await self._finish(turn, "completed", text, message_id)
            if finished.status != "completed":  # a cancel released the slot first
                self._publish(Cancelled())
                return TurnOutcome(finished.status)
            self._publish(self._done(message_id, text, usage, finished))
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
        except Exception:
            # A bug in this workflow. Left alone, Temporal would retry the workflow task
            # forever and the session would answer TURN_IN_PROGRESS until someone
            # terminated the workflow by hand; instead the turn fails.
            workflow.logger.exception("turn workflow failed unexpectedly")
            await self._end(turn, "failed", Failed(ErrorCode.AGENT_ERROR, "agent turn failed"))
            return TurnOutcome("failed")

    def _publish(self, event: TurnEvent) -> None:
        self.published += 1
        self.events.publish(event)

    async def _end_cancelled(self, turn: str) -> None:
        await self._end(turn, "cancelled", Cancelled())

    async def _end_failed(self, turn: str, err: ActivityError) -> None:
        """Release the slot, then tell the client why (a key problem as LLM_UNAVAILABLE)."""
        cause = err.cause
        reason = cause.message if isinstance(cause, ApplicationError) else str(err)
        # The details stay in the worker's log; the wire gets a reference to them.
        ref = str(workflow.uuid4())[:8]
        workflow.logger.warning("turn failed (ref %s): %s", ref, reason)
        if isinstance(cause, ApplicationError) and cause.type == LLM_UNAVAILABLE:
            event = Failed(ErrorCode.LLM_UNAVAILABLE, reason)
        else:
            event = Failed(
                ErrorCode.AGENT_ERROR, f"the agent could not complete this turn (ref {ref})"
            )
        await self._end(turn, "failed", event)

    async def _end(self, turn: str, status: EndStatus, event: Failed | Cancelled) -> None:
        """Release the slot as `status` and publish the terminal event.

        Only activity errors are expected here; anything else becomes a workflow failure
        (the gateway's next claim then takes the slot over), never a wedged task.
        """
        try:
            await self._finish(turn, status)
        except Exception as err:
            # The client still gets its one terminal event; the slot is then taken over
            # by the session's next claim (its workflow is no longer running).
            self._publish(event)
            if isinstance(err, ActivityError):
                raise
            raise ApplicationError(f"could not end the turn: {err!r}", non_retryable=True) from err
        self._publish(event)

    async def _agent_loop(self, turn: str) -> tuple[str, Usage]:
        """Model calls and tool calls until the model answers without tools.

        The last allowed iteration runs with tools disabled, so the turn ends with words.
        A reply cut off at the output limit ends the turn, saying so, and so does a turn
        whose calls have spent its token budget when the model asks for tools again.
        """
        notice = ""
        usage = Usage()
        for iteration in range(self.inp.max_iterations):
            last = iteration == self.inp.max_iterations - 1
            output = await self._activity(
                ModelActivities.call_model,
                ModelInput(
                    turn_id=turn,
                    conversation_id=self.inp.conversation_id,
                    org_id=self.inp.org_id,
                    user_id=self.inp.user_id,
                    agent_id=self.inp.agent_id,
                    model=self.inp.model,
                    iteration=iteration,
                    stream=self.inp.stream,
                    allow_tools=not last,
                    user_message=self.user_message if iteration == 0 else None,
                    after=self.published,
                    groups=self.inp.groups,
                    skill=self.inp.skill,
                    paragraph=self._said_before(),
                ),
                MODEL_CALL,
            )
            usage.add(output.usage)
            self.texts.append(output.text)
            if output.stop_reason == "max_tokens":
                workflow.logger.warning("model reply reached the output limit")
                if self.inp.stream:
                    self._publish(Token(TRUNCATED_NOTICE))
                notice = TRUNCATED_NOTICE
                self.truncated = "length"
                break
            if not output.tool_calls or last:
                break
            # Patched (asked only when the budget trips): a turn an older worker ran past
            # its budget, started by a newer gateway, replays the path it took.
            if self._budget_spent(usage) and workflow.patched(TOKEN_BUDGET_PATCH):
                workflow.logger.warning("turn reached its token budget")
                if self.inp.stream:
                    self._publish(Token(BUDGET_NOTICE))
                notice = BUDGET_NOTICE
                self.truncated = "budget"
                break
            for call in output.tool_calls:
                await self._run_tool(turn, iteration, call)
        return self._reply_text() + notice, usage

    def _said_before(self) -> bool:
        """An earlier call said something, so this call's text is a new paragraph (patched:
        a turn an older worker began streams as it did)."""
        return any(t.strip() for t in self.texts) and workflow.patched(PARAGRAPHS_PATCH)

    def _reply_text(self) -> str:
        """The model calls' texts, each its own paragraph. Patched (asked only when two or
        more calls said something, where the join differs): a turn an older worker began
        replays the text it stored."""
        said = [t for t in self.texts if t.strip()]
        if len(said) > 1 and workflow.patched(PARAGRAPHS_PATCH):
            return join_paragraphs(self.texts)
        return "".join(self.texts)

    def _budget_spent(self, usage: Usage) -> bool:
        """The turn's calls have used its token budget (prompt tokens, cached or not, and
        output), so it makes no further call."""
        budget = self.inp.token_budget
        return budget > 0 and usage.prompt_tokens + usage.output_tokens >= budget

    async def _run_tool(self, turn: str, iteration: int, call: ToolCall) -> None:
        verdict = interaction = None
        if call.name in RAISE_TOOLS and call.offered:
            interaction = await self._ask(turn, call)
            if interaction is None:  # not parked: the tool answers by itself
                self._publish_call(call)
        elif call.write:
            verdict = await self._park(turn, call)
        else:
            self._publish_call(call)
        result = await self._activity(
            ToolActivities.run_tool,
            ToolInput(
                turn_id=turn,
                iteration=iteration,
                call=call,
                org_id=self.inp.org_id,
                user_id=self.inp.user_id,
                verdict=verdict,
                groups=self.inp.groups,
                interaction_id=interaction,
            ),
            TOOL_CALL,
        )
        self._publish(
            ToolResult(call.id, call.name, result.is_error, result.result, result.description)
        )

    def _publish_call(self, call: ToolCall) -> None:
        self._publish(ToolCallStarted(call.id, call.name, call.arguments))

    @workflow.signal(name="verdict")
    def verdict(self, decision: Decision) -> None:
        """A person's claimed decision, delivered by the gateway that won the claim."""
        self.decisions.setdefault(decision.approval_id, decision.approved)

    @workflow.signal(name="extend_approval")
    def extend_approval(self, extension: Extension) -> None:
        """The desk gave an approval more time (its deadline only ever moves later)."""
        known = self.extended.get(extension.approval_id)
        if known is None or extension.deadline > known:
            self.extended[extension.approval_id] = extension.deadline

    async def _park(self, turn: str, call: ToolCall) -> Verdict:
        """Ask a person, and wait (durably) for their decision or the deadline: the tool's
        own approval timeout, else the turn's, moved later by the desk's extensions.

        The database holds the one decision: at the deadline the expiry only wins if no
        confirm claimed the approval first.
        """
        approval_id = str(workflow.uuid4())
        seconds = call.approval_timeout_seconds or self.inp.approval_timeout_seconds
        timeout = timedelta(seconds=seconds)
        await self._activity(
            ApprovalActivities.record_approval,
            ApprovalInput(
                approval_id=approval_id,
                turn_id=turn,
                session_id=self.inp.session_id,
                request_id=self.inp.request_id,
                call=call,
                deadline=workflow.now() + timeout,
            ),
            STORAGE,
        )
        self._publish(ApprovalAsked(approval_id, call.name, call.description))
        self._publish_call(call)

        def decided() -> bool:
            return approval_id in self.decisions

        waited = await self._until(decided, timeout, "approval")
        # An extension only adds timers after the first one fired: a turn nobody extended
        # issues the commands it always did.
        while not waited and (later := self.extended.get(approval_id)) is not None:
            remaining = later - workflow.now()
            if remaining <= timedelta(0):
                break
            waited = await self._until(decided, remaining, "approval (extended)")
        if waited:
            return "approved" if self.decisions[approval_id] else "denied"
        if not workflow.patched(EXPIRY_PATCH):
            return await self._activity(ApprovalActivities.expire_approval, approval_id, STORAGE)
        return await self._expire_when_due(approval_id, decided)

    async def _expire_when_due(self, approval_id: str, decided: Callable[[], bool]) -> Verdict:
        """Expire the approval if PostgreSQL agrees its deadline has passed (its clock, its
        deadline); when the row holds a later one (the desk extended it, and the signal is
        late or lost), wait again until then, still woken by a decision."""
        while True:
            due: ApprovalDue = await self._activity(
                ApprovalActivities.expire_due_approval, approval_id, STORAGE
            )
            if due.decision is not None:
                return due.decision
            wait = max(due.deadline - workflow.now(), RECHECK)
            if await self._until(decided, wait, "approval (extended)"):
                return "approved" if self.decisions[approval_id] else "denied"

    @workflow.signal(name="interaction_answered")
    def interaction_answered(self, answer: Answered) -> None:
        """A visitor's claimed answer, delivered by the gateway that won the claim (the
        answer itself is in PostgreSQL, where the tool activity reads it)."""
        self.answered.add(answer.interaction_id)

    async def _ask(self, turn: str, call: ToolCall) -> str | None:
        """Ask the visitor a raise tool's question, when their client can show it, and wait
        (durably) for their answer or the deadline. Returns the interaction's id, or None
        when the turn did not park (the tool then answers by itself).

        As for approvals, the database holds the one answer: at the deadline the expiry only
        wins if no submit claimed the question first.
        """
        interaction_id = str(workflow.uuid4())
        seconds = self.inp.interaction_timeout_seconds or self.inp.approval_timeout_seconds
        timeout = timedelta(seconds=seconds)
        asked = await self._activity(
            InteractionActivities.record_interaction,
            InteractionInput(
                interaction_id=interaction_id,
                turn_id=turn,
                session_id=self.inp.session_id,
                request_id=self.inp.request_id,
                conversation_id=self.inp.conversation_id,
                call=call,
                deadline=workflow.now() + timeout,
            ),
            STORAGE,
        )
        if not asked.parked:
            return None
        self._publish(InteractionAsked(interaction_id, asked.kind, asked.spec, asked.reason))
        self._publish_call(call)
        if not await self._until(lambda: interaction_id in self.answered, timeout, "interaction"):
            await self._activity(InteractionActivities.expire_interaction, interaction_id, STORAGE)
        return interaction_id

    @staticmethod
    async def _until(decided: Callable[[], bool], within: timedelta, summary: str) -> bool:
        """Wait durably until `decided()`; False when `within` passed first."""
        try:
            await workflow.wait_condition(decided, timeout=within, timeout_summary=summary)
        except TimeoutError:
            return False
        return True

    async def _finish(
        self, turn: str, status: EndStatus, text: str = "", message_id: str = ""
    ) -> FinishOutput:
        """Release the slot (and store the reply); a turn that did not complete also
        stores the user message, which a cancel or failure may have reached first."""
        return await self._activity(
            StorageActivities.finish_turn,
            FinishInput(
                turn_id=turn,
                conversation_id=self.inp.conversation_id,
                participant_id=self.inp.agent_participant_id,
                message_id=message_id,
                text=text,
                status=status,
                user_message=self.user_message if status != "completed" else None,
                truncated=self.truncated,
                text_lengths=paragraph_lengths(self.texts) if status == "completed" else [],
            ),
            STORAGE,
        )

    @staticmethod
    async def _activity(
        method: Callable[[Any, ArgT], Awaitable[ResultT]], arg: ArgT, policy: Policy
    ) -> ResultT:
        return await workflow.execute_activity_method(
            method,
            arg,
            start_to_close_timeout=policy.start_to_close,
            heartbeat_timeout=policy.heartbeat,
            retry_policy=policy.retry,
        )

    @staticmethod
    def _done(message_id: str, text: str, usage: Usage, finished: FinishOutput) -> Done:
        return Done(
            message_id=message_id,
            text=text,
            usage=TurnUsage(usage.cost_usd, usage.prompt_tokens, usage.output_tokens),
            citations=finished.citations,
            escalation_reason=finished.escalation_reason,
        )
