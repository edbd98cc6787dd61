"""What the model and tool activities report: GenAI spans and Prometheus metrics.

Spans follow OpenTelemetry's GenAI semantic conventions (development status; the current
names, `gen_ai.provider.name` rather than the older `gen_ai.system`):
- `chat {model}` (CLIENT) around each streamed model request: `gen_ai.operation.name`,
  `gen_ai.provider.name` (`anthropic`), `gen_ai.request.model`, `gen_ai.request.max_tokens`,
  `gen_ai.request.stream`, `gen_ai.response.model`, `gen_ai.response.id`,
  `gen_ai.response.finish_reasons`, `gen_ai.response.time_to_first_chunk`,
  `gen_ai.usage.input_tokens` (every prompt token: uncached, cache writes and cache reads, as
  the conventions define it for Anthropic), `gen_ai.usage.output_tokens`,
  `gen_ai.usage.cache_creation.input_tokens`, `gen_ai.usage.cache_read.input_tokens`, and
  `parley.cost_usd` (the conventions have no cost); `error.type` when the call fails.
- `execute_tool {name}` (INTERNAL) around each tool activity: `gen_ai.operation.name`,
  `gen_ai.tool.name`, `gen_ai.tool.call.id`, `gen_ai.tool.type` (`function`),
  `parley.tool.verdict` for a parked write, `error.type` for an error result.
Neither carries content: no prompt, reply, tool arguments or results, and no exception
messages (they can quote them); errors are named by type only.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import anthropic
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from temporalio.exceptions import ApplicationError

from parley import metrics, tracing
from parley.tools import ToolRegistry
from parley.turn.types import ToolInput, ToolOutput, Usage

PROVIDER = "anthropic"
UNKNOWN_TOOL = "_unknown"


class ModelCall:
    """One model request in progress: its span, and when its first chunk came."""

    def __init__(self, span: Span, model: str) -> None:
        self.span = span
        self.model = model
        self.started = time.monotonic()
        self._first_chunk: float | None = None

    def chunk(self) -> None:
        """A streamed event arrived (cheap: called for each one)."""
        if self._first_chunk is None:
            self._first_chunk = time.monotonic()
            self.span.set_attribute(
                "gen_ai.response.time_to_first_chunk", self._first_chunk - self.started
            )

    def response(self, message: anthropic.types.Message) -> None:
        """The final message: what answered, and why it stopped."""
        self.span.set_attributes(
            {
                "gen_ai.response.model": message.model,
                "gen_ai.response.id": message.id,
                "gen_ai.response.finish_reasons": [message.stop_reason or ""],
            }
        )

    def usage(self, usage: Usage) -> None:
        """What the call spent: on the span, and counted by model."""
        self.span.set_attributes(
            {
                "gen_ai.usage.input_tokens": usage.prompt_tokens,
                "gen_ai.usage.output_tokens": usage.output_tokens,
                "gen_ai.usage.cache_creation.input_tokens": usage.cache_write_tokens,
                "gen_ai.usage.cache_read.input_tokens": usage.cache_read_tokens,
                "parley.cost_usd": usage.cost_usd,
            }
        )
        tokens = metrics.MODEL_TOKENS
        tokens.labels(self.model, "input").inc(usage.input_tokens)
        tokens.labels(self.model, "cache_write").inc(usage.cache_write_tokens)
        tokens.labels(self.model, "cache_read").inc(usage.cache_read_tokens)
        tokens.labels(self.model, "output").inc(usage.output_tokens)
        metrics.MODEL_COST.labels(self.model).inc(usage.cost_usd)


@contextmanager
def model_call(request: dict[str, Any]) -> Iterator[ModelCall]:
    """A `chat` span around one streamed request (as made: `request` is the Messages API
    body), and the call counted and timed by model."""
    model = str(request["model"])
    with tracing.tracer().start_as_current_span(
        f"chat {model}",
        kind=SpanKind.CLIENT,
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": PROVIDER,
            "gen_ai.request.model": model,
            "gen_ai.request.max_tokens": int(request.get("max_tokens", 0)),
            "gen_ai.request.stream": True,
        },
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        call = ModelCall(span, model)
        outcome = "error"
        try:
            yield call
            outcome = "ok"
        except BaseException as err:
            _failed(span, err)
            raise
        finally:
            metrics.MODEL_CALLS.labels(model, outcome).inc()
            metrics.MODEL_CALL_DURATION.labels(model).observe(time.monotonic() - call.started)


S = TypeVar("S")
ToolActivity = Callable[[S, ToolInput], Awaitable[ToolOutput]]


def tool_call(
    registry: Callable[[Any], ToolRegistry],
) -> Callable[[ToolActivity[S]], ToolActivity[S]]:
    """Decorates the tool activity: an `execute_tool` span around it, and the call counted
    by tool and outcome. `registry(self)` is the activity's tool registry (a tool name the
    registry does not have is the model's invention: it is not put on spans or labels)."""

    def decorate(run: ToolActivity[S]) -> ToolActivity[S]:
        @functools.wraps(run)
        async def traced(self: S, inp: ToolInput) -> ToolOutput:
            call = inp.call
            name = call.name if registry(self).get(call.name) is not None else UNKNOWN_TOOL
            attributes: dict[str, str] = {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.type": "function",
                "gen_ai.tool.call.id": call.id,
            }
            if name != UNKNOWN_TOOL:
                attributes["gen_ai.tool.name"] = name
            if inp.verdict is not None:
                attributes["parley.tool.verdict"] = inp.verdict
            span_name = "execute_tool" if name == UNKNOWN_TOOL else f"execute_tool {name}"
            with tracing.tracer().start_as_current_span(
                span_name,
                kind=SpanKind.INTERNAL,
                attributes=attributes,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                try:
                    output = await run(self, inp)
                except BaseException as err:
                    _failed(span, err)
                    raise
                ran = inp.verdict in (None, "approved")
                if output.is_error:
                    if name == UNKNOWN_TOOL:
                        error = "unknown_tool"
                    elif not call.offered:  # a skill's turn did not offer it: never run
                        error = "not_offered"
                    else:
                        error = "tool_error" if ran else f"not_run_{inp.verdict}"
                    span.set_attribute("error.type", error)
                    span.set_status(Status(StatusCode.ERROR, error))
                outcome = "not_run" if not ran else "error" if output.is_error else "ok"
                metrics.TOOL_CALLS.labels(name, outcome).inc()
                return output

        return traced

    return decorate


def _failed(span: Span, err: BaseException) -> None:
    """Name the failure on the span (its type only: a message can quote content)."""
    kind = err.type if isinstance(err, ApplicationError) and err.type else type(err).__name__
    span.set_attribute("error.type", kind)
    span.set_status(Status(StatusCode.ERROR, kind))
