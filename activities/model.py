"""The model call: Claude through the official `anthropic` SDK, streamed into the turn.

Text deltas are published into the turn workflow's stream from inside the activity (the
first one flushed at once, the rest in short batches), so the gateway can forward them
while the model is still writing. The SDK's own retries are off: Temporal retries the
activity (rate limits, overload, 5xx, lost connections) with backoff, and a retried
attempt first publishes a `reset` so clients drop the partial text of the failed one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import anthropic
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import heartbeating
from activities.live import LiveNotifier
from activities.publishing import CallPosition, TurnPublisher
from activities.telemetry import ModelCall, model_call
from parley import prompts
from parley.knowledge import access, search, sources, types
from parley.knowledge.embeddings import load_embedder
from parley.logs import get_logger
from parley.model_keys import ModelClients
from parley.settings import Settings
from parley.skills import Skill
from parley.storage import context, messages, organizations, skills, usage
from parley.storage.db import Conn, Pool
from parley.tools import TEAM_SENTENCE, VISITOR, ToolRegistry
from parley.turn.pricing import PRICES_PER_MTOK, Price, cost_usd, for_model
from parley.turn.record import PARAGRAPH
from parley.turn.types import ModelInput, ModelOutput, ToolCall, Usage

log = get_logger(__name__)

CONTEXT_BUDGET_TOKENS = 32_000

# Errors the model API returns for a request that will never succeed as sent.
MODEL_REJECTED = "ModelRejected"
LLM_UNAVAILABLE = "LlmUnavailable"
SKILL_GONE = "SkillGone"


class ModelActivities:
    def __init__(
        self,
        pool: Pool,
        settings: Settings,
        tools: ToolRegistry,
        clients: ModelClients,
        *,
        batch_interval: timedelta = timedelta(milliseconds=500),
        live: LiveNotifier | None = None,
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._tools = tools
        self._clients = clients
        self._batch_interval = batch_interval
        self._live = live
        self._prices = {**PRICES_PER_MTOK, **settings.model_prices}

    @activity.defn(name="call_model")
    async def call_model(self, inp: ModelInput) -> ModelOutput:
        client = await self._clients.for_org(inp.org_id)
        if client is None:
            raise ApplicationError(
                "no model API key is configured for this organization",
                type=LLM_UNAVAILABLE,
                non_retryable=True,
            )
        request, grounding = await self._request(inp)
        attempt = activity.info().attempt
        position = CallPosition(inp.turn_id, inp.iteration, attempt, inp.after)
        publisher = TurnPublisher.for_current_activity(position, self._batch_interval, self._live)
        async with heartbeating(), publisher:
            if attempt > 1 and inp.stream:
                publisher.reset()
            with model_call(request) as call:
                output, blocks = await self._stream(client, request, inp, publisher, call)
                call.usage(output.usage)
        # Recorded once the reply is in, off the path to the first token. What the call
        # spent counts against today's budgets at once (a retried call asked the model
        # again, and counts again); citations and the turn's later calls read the rest (a
        # retried first call records it again).
        async with self._pool.connection() as conn:
            spent = output.usage
            await usage.record(
                conn,
                inp.org_id,
                inp.agent_id,
                spent.prompt_tokens + spent.output_tokens,
                spent.cost_usd,
            )
            if inp.user_message is not None:
                await sources.record_sources(conn, inp.turn_id, grounding, "grounding")
            if output.tool_calls:
                await context.save_assistant_step(conn, inp.turn_id, inp.iteration, blocks)
        return output

    async def _request(self, inp: ModelInput) -> tuple[dict[str, Any], list[types.Hit]]:
        """The API request, and the grounding it carries (new hits to record, first call).

        Laid out for the prompt cache, breakpoints included: see `parley.prompts`. The
        conversation and the knowledge are read on two connections at once: both sit on
        the path to the first token.
        """
        (conversation, steps), (persona, skill, grounding) = await asyncio.gather(
            self._messages(inp), self._knowledge(inp)
        )
        request: dict[str, Any] = {
            "model": inp.model,
            "max_tokens": self._settings.max_tokens,
            "system": prompts.system_blocks(persona, skill),
            "messages": prompts.messages(conversation, grounding, steps),
        }
        options = for_model(self._settings.model_options, inp.model)
        if options is not None:
            request.update(options.request_fields())
        tools = [t.spec() for t in self._tools.all() if skill is None or skill.allows(t.name)]
        if tools:
            request["tools"] = prompts.tool_specs(tools)
            if not inp.allow_tools:
                request["tool_choice"] = {"type": "none"}
        return request, grounding if inp.user_message is not None else []

    async def _messages(self, inp: ModelInput) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The conversation, ending with the user's message (stored first, on the turn's
        first call), and the turn's own earlier steps."""
        async with self._pool.connection() as conn:
            if inp.user_message is not None:
                await messages.add_user_message(
                    conn, inp.conversation_id, inp.turn_id, inp.user_message
                )
            history = await context.conversation_messages(
                conn, inp.conversation_id, CONTEXT_BUDGET_TOKENS
            )
            if inp.iteration == 0:
                return history, []
            return history, await context.turn_steps(conn, inp.turn_id, inp.iteration)

    async def _knowledge(self, inp: ModelInput) -> tuple[str | None, Skill | None, list[types.Hit]]:
        """The org's persona, the turn's skill, and knowledge for the user's message:
        retrieved on the first call, filtered to what the requester may read; later calls
        reuse what it recorded."""
        async with self._pool.connection() as conn:
            persona = await organizations.persona(conn, inp.org_id)
            skill = await self._skill(conn, inp)
            if inp.user_message is None:
                return persona, skill, await sources.turn_grounding(conn, inp.turn_id)
            hits = await search.search(
                conn,
                await access.requester(conn, inp.org_id, inp.user_id, inp.groups),
                inp.user_message.text,
                limit=self._settings.grounding_results,
                rerank=self._settings.rerank == "lexical",
                embedder=load_embedder(self._settings.embeddings),
            )
            return persona, skill, hits

    @staticmethod
    async def _skill(conn: Conn, inp: ModelInput) -> Skill | None:
        """The turn's skill. One deleted while its turn runs fails the turn rather than let
        it go on without the instructions, or with tools, the skill would not allow."""
        if inp.skill is None:
            return None
        skill = await skills.get(conn, inp.org_id, inp.skill)
        if skill is None:
            raise ApplicationError(
                "the turn's skill no longer exists", type=SKILL_GONE, non_retryable=True
            )
        return skill

    def _call(
        self, call_id: str, name: str, arguments: dict[str, Any], offered: set[str]
    ) -> ToolCall:
        """A tool call, marked as a write (parks for approval) with its approval sentence.
        A call to a tool the request did not offer (a skill narrows them) never runs, so it
        does not park either."""
        if name not in offered:
            return ToolCall(call_id, name, arguments, offered=False)
        write = self._tools.is_write(name, self._settings.confirm_tools)
        description = self._tools.describe(name, arguments) if write else ""
        if write and VISITOR not in self._tools.approvers(name):
            description = TEAM_SENTENCE.format(sentence=description)
        timeout = self._tools.approval_timeout(name) if write else None
        return ToolCall(
            call_id,
            name,
            arguments,
            write=write,
            description=description,
            approval_timeout_seconds=timeout.total_seconds() if timeout else 0.0,
        )

    async def _stream(
        self,
        client: anthropic.AsyncAnthropic,
        request: dict[str, Any],
        inp: ModelInput,
        publisher: TurnPublisher,
        call: ModelCall,
    ) -> tuple[ModelOutput, list[dict[str, Any]]]:
        """The call's output, and its content as the turn's next call sends it back."""
        try:
            final = await self._reply(client, request, inp, publisher, call)
        except anthropic.BadRequestError as err:
            # Refused before a token was written. A linked image the API could not fetch
            # would fail this turn and every later one (they send it again): try once more
            # with a note in its place.
            fallback = prompts.without_linked_images(request)
            if fallback is None:
                raise _classify(err) from None
            log.warning("the model API refused a request with linked images; without them")
            try:
                final = await self._reply(client, fallback, inp, publisher, call)
            except anthropic.APIStatusError as again:
                raise _classify(again) from None
        except anthropic.APIStatusError as err:
            raise _classify(err) from None
        call.response(final)
        text = "".join(b.text for b in final.content if b.type == "text")
        offered = {tool["name"] for tool in request.get("tools", ())}
        calls = [
            self._call(b.id, b.name, dict(b.input), offered)
            for b in final.content
            if b.type == "tool_use"
        ]
        usage = _usage(inp.model, final.usage, self._prices)
        output = ModelOutput(
            text=text, tool_calls=calls, usage=usage, stop_reason=final.stop_reason or ""
        )
        return output, _assistant_blocks(final)

    @staticmethod
    async def _reply(
        client: anthropic.AsyncAnthropic,
        request: dict[str, Any],
        inp: ModelInput,
        publisher: TurnPublisher,
        call: ModelCall,
    ) -> anthropic.types.Message:
        # After an earlier call's text, this call's starts a paragraph: streamed as the
        # turn's reply joins them, so a client's tokens add up to the stored reply.
        lead = PARAGRAPH if inp.paragraph else ""
        async with client.messages.stream(**request) as stream:
            async for event in stream:
                call.chunk()
                if event.type == "text" and event.text and inp.stream:
                    publisher.token(lead + event.text)
                    lead = ""
            return await stream.get_final_message()


RETRYABLE_ERROR_TYPES = frozenset({"overloaded_error", "api_error", "rate_limit_error"})


def _classify(err: anthropic.APIStatusError) -> Exception:
    """Retryable (429, 529, 5xx, or such an error inside a 200 stream) or a non-retryable
    rejection of the request (other 4xx)."""
    status = err.status_code
    error_type = _api_error(err)[0]
    if status in (408, 409, 429) or status >= 500 or error_type in RETRYABLE_ERROR_TYPES:
        return ApplicationError(
            f"model API error {status} {error_type or ''}".strip(),
            type=f"ModelStatus{status}",
            next_retry_delay=_retry_after(err),
        )
    message = _api_error(err)[1]
    log.warning("model rejected the request", status=status, error=message)
    return ApplicationError(
        f"the model API rejected the request ({status}): {message}",
        type=MODEL_REJECTED,
        non_retryable=True,
    )


def _api_error(err: anthropic.APIStatusError) -> tuple[str | None, str]:
    """(type, message) from the API's error body, as far as it has them."""
    body = err.body
    inner = body.get("error") if isinstance(body, dict) else None
    if isinstance(inner, dict):
        return inner.get("type"), str(inner.get("message") or err.message)
    return None, err.message


def _retry_after(err: anthropic.APIStatusError) -> timedelta | None:
    value = err.response.headers.get("retry-after")
    try:
        return timedelta(seconds=min(float(value), 60)) if value else None
    except ValueError:
        return None


def _usage(model: str, reported: anthropic.types.Usage, prices: Mapping[str, Price]) -> Usage:
    """The call's tokens, cache writes and reads apart, priced now (replays keep the price)."""
    tokens_in, tokens_out = reported.input_tokens, reported.output_tokens
    written = reported.cache_creation_input_tokens or 0
    read = reported.cache_read_input_tokens or 0
    cost = cost_usd(model, tokens_in, tokens_out, written, read, prices=prices)
    return Usage(tokens_in, tokens_out, cost, cache_write_tokens=written, cache_read_tokens=read)


def _assistant_blocks(message: anthropic.types.Message) -> list[dict[str, Any]]:
    """The reply's blocks as the turn's next model call sends them back: its text and tool
    calls, and its thinking unchanged and in place (the API refuses a tool loop whose
    assistant message drops or edits the signed thinking that came before its tool calls;
    models with thinking on by default send it)."""
    blocks: list[dict[str, Any]] = []
    for block in message.content:
        if block.type in ("thinking", "redacted_thinking"):
            blocks.append(block.model_dump(mode="json", exclude_none=True))
        elif block.type == "text" and block.text:
            blocks.append({"type": "text", "text": block.text})
        elif block.type == "tool_use":
            blocks.append(
                {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
            )
    return blocks
