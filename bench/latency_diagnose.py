"""Turn latency, --diagnose: where the median turn's time went, from its workflow history."""

from __future__ import annotations

import base64
from collections import Counter

from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.workflow_streams import PublishInput

from bench.latency_driver import PhaseResult, stamps
from bench.latency_report import p50_p95, pair
from parley.turn.events import TURN_EVENT, Token


async def print_timeline(client: Client, res: PhaseResult) -> None:
    """The history of the median-TTFT turn up to its first token, with the client's view."""
    samples = [s for s in res.ok if s.received and s.workflow_id]
    if not samples:
        return
    samples.sort(key=lambda s: s.received[0][0] - s.t0)
    sample = samples[len(samples) // 2]
    assert sample.workflow_id is not None
    first = sample.received[0][0]
    rows = [(t, name) for name, t in sample.marks.items()]
    rows.append((first, "client: first token received"))
    history = await client.get_workflow_handle(sample.workflow_id).fetch_history()
    for event in history.events:
        t = event.event_time.ToMicroseconds() / 1e6
        if t > first + 0.001:
            break
        name = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")
        which = event.WhichOneof("attributes")
        attrs = getattr(event, which) if which else None
        if event.HasField("activity_task_scheduled_event_attributes"):
            name += f" {attrs.activity_type.name}"
        elif event.HasField("workflow_execution_signaled_event_attributes"):
            name += f" {attrs.signal_name}"
        rows.append((t, name))
    rows.sort()
    print(f"    timeline of the median-TTFT {res.phase} turn (ms after the request):")
    for t, name in rows:
        print(f"      {(t - sample.t0) * 1000:8.1f}  {name}")


def wire_payload(data: str) -> Payload:
    """A published item's payload from its wire form (`PublishEntry.data`: base64 of the
    serialized Payload, as the library documents it)."""
    payload = Payload()
    payload.ParseFromString(base64.b64decode(data))
    return payload


async def print_latency_split(client: Client, res: PhaseResult, turns: int = 30) -> None:
    """Per-delta latency cut in two at the moment the workflow received the delta's signal:
    publish side (stamp -> signal in history) and delivery side (signal -> client)."""
    converter = client.data_converter.payload_converter
    publish: list[float] = []
    deliver: list[float] = []
    counts: Counter[str] = Counter()
    chosen = [s for s in res.ok if s.workflow_id][:turns]
    for sample in chosen:
        assert sample.workflow_id is not None
        history = await client.get_workflow_handle(sample.workflow_id).fetch_history()
        signaled: dict[float, float] = {}
        for event in history.events:
            counts[EventType.Name(event.event_type)] += 1
            if not event.HasField("workflow_execution_signaled_event_attributes"):
                continue
            attrs = event.workflow_execution_signaled_event_attributes
            if attrs.signal_name != "__temporal_workflow_stream_publish":
                continue
            at = event.event_time.ToMicroseconds() / 1e6
            # The codec's, then the converter's (PARLEY_PAYLOAD_KEYS' encryption, if set).
            [batch] = await client.data_converter.decode(list(attrs.input.payloads), [PublishInput])
            for entry in batch.items:
                item = converter.from_payload(wire_payload(entry.data), TURN_EVENT)
                for stamp in stamps(item.text if isinstance(item, Token) else ""):
                    signaled[stamp] = at
        for now, token in sample.received:
            for stamp in stamps(token):
                if stamp in signaled:
                    publish.append(signaled[stamp] - stamp)
                    deliver.append(now - signaled[stamp])
    n = max(1, len(chosen))
    print(
        f"    {res.phase} per-delta latency split over {len(chosen)} turns: "
        f"publish side (stamp -> signal recorded) {pair(p50_p95(publish))}, "
        f"delivery side (signal -> client) {pair(p50_p95(deliver))}\n"
        f"    {res.phase} per turn: "
        f"{counts['EVENT_TYPE_WORKFLOW_TASK_COMPLETED'] / n:.1f} workflow tasks, "
        f"{counts['EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED'] / n:.1f} publish signals, "
        f"{counts['EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED'] / n:.1f} polls, "
        f"{sum(counts.values()) / n:.0f} history events"
    )
