"""Traces and metrics: one turn's trace joins the gateway, the workflow, the model calls and
the tool call, with the GenAI attributes and no content; `/metrics` on the gateway and on
the worker moves with the turn; tracing is off unless the `OTEL_*` variables turn it on,
and then spans reach an OTLP endpoint; the tracing interceptor is replay-safe."""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families
from temporalio.worker import Replayer

from parley import temporal_client, tracing
from parley.logs import configure_logging, get_logger
from parley.settings import Settings
from parley.stack.fake_anthropic import FakeAnthropic, Reply, ToolCall
from parley.stack.processes import free_port
from parley.storage import live
from parley.turn.events import Token
from parley.turn.pricing import cost_usd
from parley.turn.types import turn_id
from tests.helpers import (
    GatewayServer,
    WsClient,
    run_turn,
    running_gateway,
    running_worker,
    tokens,
)
from tests.test_approvals import confirm, park
from tests.test_log_redaction import restore_logging  # noqa: F401 (a fixture)
from workflows.turn import TurnWorkflow

MESSAGE = "Where is my order ORD-7QX? My card ends 4242-VISA-MARKER."
REPLY = "It has shipped with DHL."
LOOKUP = ToolCall("order_status", {"order_id": "ORD-7QX"}, id="toolu_observed1")
# Two model calls with their usage scripted: (uncached input, output, cache write, cache read).
FIRST = (120, 25, 1500, 0)
SECOND = (40, 12, 0, 1500)


def scripted(usage: tuple[int, int, int, int], **reply: Any) -> Reply:
    tokens_in, tokens_out, written, read = usage
    return Reply(
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        cache_creation_input_tokens=written,
        cache_read_input_tokens=read,
        **reply,
    )


# -- the stack, traced --------------------------------------------------------------------


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Parley's spans, in memory, for this test (tracing off again afterwards)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    yield exporter
    tracing.install(None)
    provider.shutdown()


@dataclass
class Stack:
    settings: Settings
    gateway: GatewayServer

    @property
    def gateway_metrics(self) -> str:
        """With PARLEY_ADMIN_PORT set, /metrics is on the admin listener."""
        return f"http://127.0.0.1:{self.settings.admin_port}/metrics"

    @property
    def worker_metrics(self) -> str:
        return f"http://127.0.0.1:{self.settings.worker_metrics_port}/metrics"


@pytest.fixture
async def stack(spans: InMemorySpanExporter, isolated_settings: Settings) -> AsyncIterator[Stack]:
    """A gateway and a worker of their own, made while tracing is on (their Temporal
    clients carry the interceptor), with their /metrics listeners."""
    settings = isolated_settings.model_copy(
        update={
            "worker_metrics_port": free_port(),
            "admin_port": free_port(),
        }
    )
    async with running_worker(settings), running_gateway(settings) as gateway:
        yield Stack(settings, gateway)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(url: str) -> Samples:
    """Every sample on a /metrics page, by name and labels."""
    async with httpx.AsyncClient() as http:
        response = await http.get(url, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


class Change:
    """How much each sample moved between two scrapes."""

    def __init__(self, before: Samples, after: Samples) -> None:
        self.before, self.after = before, after

    def __call__(self, name: str, **labels: str) -> float:
        return value(self.after, name, **labels) - value(self.before, name, **labels)


# -- one turn, traced and counted ---------------------------------------------------------


async def test_a_turn_is_one_trace_and_moves_the_metrics(
    stack: Stack, spans: InMemorySpanExporter, fake_model: FakeAnthropic
) -> None:
    model = stack.settings.model
    fake_model.enqueue(
        scripted(FIRST, tool_calls=[LOOKUP]), scripted(SECOND, text=REPLY, chunk_chars=4)
    )
    gateway_before = await scrape(stack.gateway_metrics)
    worker_before = await scrape(stack.worker_metrics)
    async with await WsClient.open(stack.gateway.ws_url) as client:
        session_id = (await client.create_session(str(uuid.uuid4())))["sessionId"]
        connected = await scrape(stack.gateway_metrics)
        events = await run_turn(client, session_id, MESSAGE, "obs-1")
    assert events[-1]["type"] == "eventual_response" and tokens(events) == REPLY
    gateway_after = await scrape(stack.gateway_metrics)
    worker_after = await scrape(stack.worker_metrics)

    # The gateway: the connection, the turn, its first token, its deltas.
    gateway = Change(gateway_before, gateway_after)
    assert Change(gateway_before, connected)("parley_ws_connections") == 1
    assert gateway("parley_turns_started_total") == 1
    assert gateway("parley_actions_total", action="send_message", result="ok") == 1
    assert gateway("parley_time_to_first_token_seconds_count") == 1
    assert 0 < gateway("parley_time_to_first_token_seconds_sum") < 30
    live = gateway("parley_relay_items_total", lane="live")
    durable = gateway("parley_relay_items_total", lane="durable")
    assert live + durable == sum(1 for e in events if e["type"] == "stream_token")
    # Every delta the live lane brought carried the worker's clock, and was timed.
    assert gateway("parley_delta_lag_seconds_count") == live
    assert gateway("parley_relay_reads_total", kind="update") >= 1
    assert value(gateway_after, "parley_approvals_pending") == 0

    # The worker: the turn's end, the model calls' tokens and cost by model, the tool call.
    worker = Change(worker_before, worker_after)
    assert worker("parley_turns_finished_total", status="completed") == 1
    assert worker("parley_model_calls_total", model=model, outcome="ok") == 2
    assert worker("parley_model_call_duration_seconds_count", model=model) == 2
    kinds = ("input", "output", "cache_write", "cache_read")
    for kind, first, second in zip(kinds, FIRST, SECOND, strict=True):
        assert worker("parley_model_tokens_total", model=model, kind=kind) == first + second
    cost = cost_usd(model, *FIRST) + cost_usd(model, *SECOND)
    assert cost > 0
    assert worker("parley_model_cost_usd_total", model=model) == pytest.approx(cost)
    assert worker("parley_tool_calls_total", tool="order_status", outcome="ok") == 1

    # The trace: gateway -> workflow -> model and tool calls, one trace, parented.
    finished = spans.get_finished_spans()
    assert not [s.name for s in finished if tracing.STREAM_PLUMBING in s.name]
    [root] = [s for s in finished if s.name == "send_message"]
    trace = Trace([s for s in finished if s.context.trace_id == root.context.trace_id])
    assert root.parent is None
    start = trace.one("StartWorkflow:Turn")
    assert start.parent is not None and start.parent.span_id == root.context.span_id
    assert trace.parent(trace.one("RunWorkflow:Turn")) is start
    assert Counter(s.name for s in trace.spans) >= Counter(
        {
            "StartActivity:call_model": 2,
            "RunActivity:call_model": 2,
            f"chat {model}": 2,
            "StartActivity:run_tool": 1,
            "RunActivity:run_tool": 1,
            "execute_tool order_status": 1,
            "StartActivity:finish_turn": 1,
            "RunActivity:finish_turn": 1,
        }
    )
    for span in trace.named("StartActivity:"):
        assert trace.parent(span) is start, span.name  # the workflow's spans hang off its start
    for span in trace.named("RunActivity:"):
        started = trace.parent(span)
        assert started.name == span.name.replace("Run", "Start", 1)
    chats = sorted(trace.named("chat "), key=lambda s: s.start_time or 0)
    for chat, usage, finish in zip(chats, (FIRST, SECOND), ("tool_use", "end_turn"), strict=True):
        assert trace.parent(chat).name == "RunActivity:call_model"
        tokens_in, tokens_out, written, read = usage
        attributes = dict(chat.attributes or {})
        assert attributes["gen_ai.response.time_to_first_chunk"] > 0  # type: ignore[operator]
        del attributes["gen_ai.response.time_to_first_chunk"]
        assert attributes["gen_ai.response.id"]
        del attributes["gen_ai.response.id"]
        assert attributes == {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": model,
            "gen_ai.request.max_tokens": stack.settings.max_tokens,
            "gen_ai.request.stream": True,
            "gen_ai.response.model": model,
            "gen_ai.response.finish_reasons": (finish,),
            "gen_ai.usage.input_tokens": tokens_in + written + read,
            "gen_ai.usage.output_tokens": tokens_out,
            "gen_ai.usage.cache_creation.input_tokens": written,
            "gen_ai.usage.cache_read.input_tokens": read,
            "parley.cost_usd": pytest.approx(cost_usd(model, *usage)),
        }
    tool = trace.one("execute_tool order_status")
    assert trace.parent(tool).name == "RunActivity:run_tool"
    assert dict(tool.attributes or {}) == {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "order_status",
        "gen_ai.tool.call.id": LOOKUP.id,
        "gen_ai.tool.type": "function",
    }

    # No content, session id or key anywhere in what was recorded.
    recorded = json.dumps([json.loads(s.to_json()) for s in finished])
    # (Markers long enough not to occur by chance in ids, timestamps or numbers.)
    for secret in (MESSAGE, "ORD-7QX", "4242-VISA", REPLY, "DHL", session_id, "test-key"):
        assert secret not in recorded, secret

    # Replaying the turn's history, trace headers included, emits nothing and stays
    # deterministic with the interceptor on.
    handle = stack.gateway.services.temporal.get_workflow_handle(turn_id(session_id, "obs-1"))
    await handle.result()
    history = await handle.fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    assert "_tracer-data" in started.header.fields
    count = len(spans.get_finished_spans())
    replayer = Replayer(
        workflows=[TurnWorkflow],
        interceptors=tracing.temporal_interceptors(),
        data_converter=temporal_client.data_converter(stack.settings.payload_keys),
    )
    await replayer.replay_workflow(history)
    assert len(spans.get_finished_spans()) == count


class Trace:
    def __init__(self, spans: list[ReadableSpan]) -> None:
        self.spans = spans
        self._by_id = {s.context.span_id: s for s in spans}

    def named(self, prefix: str) -> list[ReadableSpan]:
        return [s for s in self.spans if s.name.startswith(prefix)]

    def one(self, name: str) -> ReadableSpan:
        [span] = [s for s in self.spans if s.name == name]
        return span

    def parent(self, span: ReadableSpan) -> ReadableSpan:
        assert span.parent is not None, f"{span.name} has no parent"
        return self._by_id[span.parent.span_id]


async def test_approvals_asked_pending_and_decided(
    stack: Stack, spans: InMemorySpanExporter, fake_model: FakeAnthropic
) -> None:
    refund = ToolCall("issue_refund", {"order_id": "ORD-1234", "reason": "damaged"})
    fake_model.enqueue(Reply(tool_calls=[refund]), Reply(text="Refunded."))
    before = await scrape(stack.gateway_metrics)
    async with await WsClient.open(stack.gateway.ws_url) as client:
        session = await client.create_session(str(uuid.uuid4()))
        await park(client, session, "ap")
        parked = await scrape(stack.gateway_metrics)
        await client.send(confirm(session, True))
        await client.recv_until(lambda e: e["type"] == "eventual_response")
    after = await scrape(stack.gateway_metrics)
    assert Change(before, parked)("parley_approvals_asked_total") == 1
    assert Change(before, parked)("parley_approvals_pending") == 1
    assert Change(before, after)("parley_approvals_decided_total", decision="approved") == 1
    assert Change(before, after)("parley_approvals_pending") == 0
    # The confirm's trace holds the verdict's signal; the turn's trace links to it.
    finished = spans.get_finished_spans()
    [confirming] = [s for s in finished if s.name == "confirm_tool_action"]
    [signal] = [s for s in finished if s.name == "SignalWorkflow:verdict"]
    [handled] = [s for s in finished if s.name == "HandleSignal:verdict"]
    assert signal.parent is not None and signal.parent.span_id == confirming.context.span_id
    [send] = [s for s in finished if s.name == "send_message"]
    assert handled.context.trace_id == send.context.trace_id
    assert [link.context.span_id for link in handled.links] == [signal.context.span_id]


async def test_metrics_stay_off_the_public_listener_with_an_admin_port(stack: Stack) -> None:
    async with httpx.AsyncClient() as http:
        public = await http.get(f"{stack.gateway.http_url}/metrics")
    assert public.status_code == 404
    assert "parley_ws_connections" in {name for name, _ in await scrape(stack.gateway_metrics)}


# -- off by default; the standard variables turn it on ------------------------------------

OTEL_VARIABLES = (
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
)


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No OTEL_* variable set, and no tracer installed, before and after the test."""
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    tracing.install(None)
    yield monkeypatch
    tracing.install(None)


@pytest.mark.parametrize(
    ("variables", "exporters"),
    [
        ({}, []),
        ({"OTEL_TRACES_EXPORTER": "console"}, [ConsoleSpanExporter]),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, [OTLPSpanExporter]),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"},
            [OTLPSpanExporter],
        ),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, [OTLPSpanExporter, ConsoleSpanExporter]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}, []),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, []),
    ],
)
def test_tracing_is_on_only_when_the_variables_say_so(
    environment: pytest.MonkeyPatch, variables: dict[str, str], exporters: list[type]
) -> None:
    for name, setting in variables.items():
        environment.setenv(name, setting)
    assert [type(e) for e in tracing.span_exporters()] == exporters
    assert tracing.configure("parley-worker") is bool(exporters)
    assert tracing.enabled() is bool(exporters)
    assert len(tracing.temporal_interceptors()) == (1 if exporters else 0)


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
    ],
)
def test_an_exporter_it_cannot_provide_stops_the_process(
    environment: pytest.MonkeyPatch, variables: dict[str, str], named: str
) -> None:
    for name, setting in variables.items():
        environment.setenv(name, setting)
    with pytest.raises(tracing.TracingConfigError, match=named):
        tracing.configure("parley-gateway")
    assert not tracing.enabled()


class _Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP trace receiver: keeps each request's spans."""

    received: list[ExportTraceServiceRequest] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.received.append((self.path, request))  # type: ignore[arg-type]
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, list[Any]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    received: list[Any] = []
    _Collector.received = received
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("service_name", "expected"), [(None, "parley-worker"), ("support-bot", "support-bot")]
)
def test_spans_reach_the_otlp_endpoint_the_variables_name(
    environment: pytest.MonkeyPatch,
    collector: tuple[str, list[Any]],
    service_name: str | None,
    expected: str,
) -> None:
    url, received = collector
    environment.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
    if service_name is not None:
        environment.setenv("OTEL_SERVICE_NAME", service_name)
    assert tracing.configure("parley-worker")
    with tracing.tracer().start_as_current_span("probe"):
        pass
    assert tracing.flush()
    [(path, request)] = received
    assert path == "/v1/traces"
    [resource_spans] = request.resource_spans
    resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert resource["service.name"] == expected
    assert [s.name for scope in resource_spans.scope_spans for s in scope.spans] == ["probe"]


@pytest.mark.usefixtures("restore_logging")
def test_log_lines_inside_a_span_name_its_trace(
    spans: InMemorySpanExporter, capfd: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", "json")
    get_logger("parley.test").info("outside")
    with tracing.tracer().start_as_current_span("probe") as span:
        get_logger("parley.test").info("inside")
    outside, inside = (json.loads(line) for line in capfd.readouterr().err.splitlines())
    assert "trace_id" not in outside
    context = span.get_span_context()
    assert inside["trace_id"] == f"{context.trace_id:032x}"
    assert inside["span_id"] == f"{context.span_id:016x}"


# -- the live lane carries the worker's clock ---------------------------------------------


def test_live_items_carry_the_worker_clock_and_tolerate_later_fields() -> None:
    item = live.LiveItem("k", 2, Token("hi", 1, 1, 3), sent_at=1_764_000_000.123456)
    payload = live.encode(item)
    assert payload is not None
    assert live.decode(payload) == item
    older = json.dumps(["k", 2, 1, 1, 3, "hi"])  # a worker from before `sent_at`
    assert live.decode(older) == live.LiveItem("k", 2, Token("hi", 1, 1, 3))
    later = json.dumps([*json.loads(payload), "a field from a later version"])
    assert live.decode(later) == item
