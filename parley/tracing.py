"""Traces: OpenTelemetry, off unless the standard `OTEL_*` variables turn it on.

Tracing is on in a process when `OTEL_TRACES_EXPORTER` names an exporter (`otlp`,
`console`, or both, comma-separated) or, with that unset, when an OTLP endpoint is set
(`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`);
`OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` keeps it off. (The SDK's own default
exporter is OTLP; Parley's default is none, so a deployment that sets nothing exports
nothing.) Everything else is the SDK's, read from the same variables: the OTLP endpoint,
headers, timeout and compression, `OTEL_EXPORTER_OTLP_PROTOCOL` (`http/protobuf`, the
default; `grpc` needs `opentelemetry-exporter-otlp-proto-grpc` installed), the sampler
(`OTEL_TRACES_SAMPLER`), the batch processor (`OTEL_BSP_*`) and the resource
(`OTEL_SERVICE_NAME`, default `parley-gateway` / `parley-worker`;
`OTEL_RESOURCE_ATTRIBUTES`).

Parley's spans go to its own provider (`tracer()`), not to the process-global one, so a
test can install an in-memory exporter (`install`) and nothing else in the process changes.
Temporal's spans come from the SDK's `TracingInterceptor`, on every client `connect` makes
(`temporal_interceptors`): `send_message` -> `StartWorkflow:Turn` on the gateway,
`RunWorkflow:Turn`, `StartActivity:*` and `RunActivity:*` on the worker, joined through the
workflow's headers. Its workflow spans are completed at once and never made while replaying
history, so they are replay-safe. The turn stream's plumbing (the model activity's publish
signals, the gateway's long-polls and queries) is left untraced: dozens per turn, they
would bury the turn's shape.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib import metadata
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from temporalio import client as temporal
from temporalio import worker
from temporalio.contrib.opentelemetry import TracingInterceptor, TracingWorkflowInboundInterceptor

from parley.logs import get_logger

log = get_logger(__name__)

INSTRUMENTATION = "parley"
# The prefix of `temporalio.contrib.workflow_streams`' signal, update and query names.
STREAM_PLUMBING = "__temporal_workflow_stream"

_provider: TracerProvider | None = None
_tracer: trace.Tracer = trace.NoOpTracer()


class TracingConfigError(ValueError):
    """The `OTEL_*` variables ask for something this installation cannot do."""


def install(provider: TracerProvider | None) -> None:
    """Send Parley's spans to `provider` (None: tracing off). Clients connected before keep
    the tracer they were made with."""
    global _provider, _tracer
    _provider = provider
    _tracer = (
        trace.NoOpTracer() if provider is None else provider.get_tracer(INSTRUMENTATION, _version())
    )


def enabled() -> bool:
    return _provider is not None


def flush(timeout_millis: int = 10_000) -> bool:
    """Export what is buffered now (processes also flush at exit); False on a timeout."""
    return _provider.force_flush(timeout_millis) if _provider is not None else True


def tracer() -> trace.Tracer:
    """Parley's tracer: a no-op one while tracing is off."""
    return _tracer


def configure(service: str) -> bool:
    """Turn tracing on from the `OTEL_*` variables, unless a provider is installed already
    (a test's, or the other half of a process that runs gateway and worker together).
    Returns whether tracing is on. Raises `TracingConfigError` for an exporter or protocol
    it cannot provide, so a misconfigured process stops at start."""
    if _provider is not None:
        return True
    exporters = span_exporters()
    if not exporters:
        return False
    provider = TracerProvider(resource=_resource(service))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    install(provider)
    log.info(
        "tracing on",
        service=provider.resource.attributes.get(SERVICE_NAME),
        exporters=[type(e).__name__ for e in exporters],
    )
    return True


def span_exporters() -> list[SpanExporter]:
    """The exporters the environment asks for (none: tracing stays off)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [n.strip().lower() for n in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",")]
    names = [n for n in names if n]
    if not names and _otlp_endpoint_set():
        names = ["otlp"]
    if "none" in names:
        return []
    makers: dict[str, Callable[[], SpanExporter]] = {"otlp": _otlp, "console": ConsoleSpanExporter}
    unknown = [n for n in names if n not in makers]
    if unknown:
        raise TracingConfigError(
            f"OTEL_TRACES_EXPORTER: unsupported exporter {unknown[0]!r} (use otlp, console or none)"
        )
    return [makers[name]() for name in names]


def _otlp_endpoint_set() -> bool:
    return any(
        os.environ.get(name, "").strip()
        for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def _otlp() -> SpanExporter:
    """The OTLP exporter for the configured protocol; it reads its endpoint, headers,
    timeout, compression and certificates from the `OTEL_EXPORTER_OTLP_*` variables."""
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found]
                OTLPSpanExporter as GrpcSpanExporter,
            )
        except ImportError:
            raise TracingConfigError(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs the opentelemetry-exporter-otlp-proto-grpc"
                " package; or use http/protobuf (the default)"
            ) from None
        exporter: SpanExporter = GrpcSpanExporter()
        return exporter
    raise TracingConfigError(
        f"OTEL_EXPORTER_OTLP_PROTOCOL: unsupported protocol {protocol!r} (use http/protobuf"
        " or grpc)"
    )


def _resource(service: str) -> Resource:
    """The SDK's resource from the environment, named `service` unless it names itself."""
    resource = Resource.create({SERVICE_VERSION: _version()})
    name = str(resource.attributes.get(SERVICE_NAME, ""))
    if not name or name.startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service}))
    return resource


def _version() -> str:
    try:
        return metadata.version("parley")
    except metadata.PackageNotFoundError:
        return "0"


# -- Temporal -------------------------------------------------------------------------------


def temporal_interceptors() -> list[temporal.Interceptor]:
    """What every Parley Temporal client carries: the tracing interceptor while tracing is
    on (it applies to the workers made with the client too), else nothing."""
    return [TurnTracingInterceptor(tracer())] if enabled() else []


def _plumbing(name: str) -> bool:
    return name.startswith(STREAM_PLUMBING)


class TurnTracingInterceptor(TracingInterceptor):
    """The SDK's tracing interceptor, less the turn stream's plumbing (on the client: the
    publish signals and the long-polls; in the workflow: their handlers)."""

    def intercept_client(self, next: temporal.OutboundInterceptor) -> temporal.OutboundInterceptor:
        return _UntracedPlumbing(super().intercept_client(next), untraced=next)

    def workflow_interceptor_class(
        self, input: worker.WorkflowInterceptorClassInput
    ) -> type[TracingWorkflowInboundInterceptor]:
        super().workflow_interceptor_class(input)  # registers the span extern function
        return _WorkflowInbound


class _UntracedPlumbing(temporal.OutboundInterceptor):
    """Routes the stream's calls around the tracing interceptor (no span, no header)."""

    def __init__(
        self, traced: temporal.OutboundInterceptor, *, untraced: temporal.OutboundInterceptor
    ) -> None:
        super().__init__(traced)
        self._untraced = untraced

    async def signal_workflow(self, input: temporal.SignalWorkflowInput) -> None:
        if _plumbing(input.signal):
            return await self._untraced.signal_workflow(input)
        return await super().signal_workflow(input)

    async def start_workflow_update(
        self, input: temporal.StartWorkflowUpdateInput
    ) -> temporal.WorkflowUpdateHandle[Any]:
        if _plumbing(input.update):
            return await self._untraced.start_workflow_update(input)
        return await super().start_workflow_update(input)

    async def query_workflow(self, input: temporal.QueryWorkflowInput) -> Any:
        if _plumbing(input.query):
            return await self._untraced.query_workflow(input)
        return await super().query_workflow(input)


class _WorkflowInbound(TracingWorkflowInboundInterceptor):
    """The workflow side: the stream's handlers run without a span."""

    async def handle_signal(self, input: worker.HandleSignalInput) -> None:
        if _plumbing(input.signal):
            return await self.next.handle_signal(input)
        return await super().handle_signal(input)

    async def handle_query(self, input: worker.HandleQueryInput) -> Any:
        if _plumbing(input.query):
            return await self.next.handle_query(input)
        return await super().handle_query(input)

    def handle_update_validator(self, input: worker.HandleUpdateInput) -> None:
        if _plumbing(input.update):
            return self.next.handle_update_validator(input)
        return super().handle_update_validator(input)

    async def handle_update_handler(self, input: worker.HandleUpdateInput) -> Any:
        if _plumbing(input.update):
            return await self.next.handle_update_handler(input)
        return await super().handle_update_handler(input)
