"""Every Prometheus metric Parley exports, in one place: names, labels and buckets.

Each process serves its own default registry at `/metrics` (the gateway on its listener,
the worker on `PARLEY_WORKER_METRICS_PORT`, see `serve`); a metric counts what happened in
the process that exports it, so a dashboard sums over gateways and workers. Labels stay
bounded: models (the configured ones), registered tool names, statuses, error codes, never a
session, a turn, a user or any text. What the hot path records (a histogram observe or a
counter increment per token delta) goes through label children bound here, once.

One gateway process serves one registry: running the gateway under several uvicorn worker
processes (prometheus_client's multiprocess mode) is not supported.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prometheus_client import Counter, Gauge, Histogram, start_http_server

# -- turns (counted where the session's slot is claimed and released: parley.storage.turns)

TURNS_STARTED = Counter("parley_turns_started_total", "Turns started (their slot claimed).")
TURNS_FINISHED = Counter(
    "parley_turns_finished_total",
    "Turns ended, by final status: completed, failed, cancelled, abandoned (a stale slot"
    " taken over).",
    ["status"],
)

# -- latency, on the gateway (the numbers a visitor feels)

_LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0)
TIME_TO_FIRST_TOKEN = Histogram(
    "parley_time_to_first_token_seconds",
    "From a send_message reaching this gateway to the turn's first token handed to its"
    " socket's writer.",
    buckets=_LATENCY_BUCKETS,
)
DELTA_LAG = Histogram(
    "parley_delta_lag_seconds",
    "From the worker receiving a text delta from the model to this gateway's feed holding it"
    " (items that came by the live lane; worker and gateway clocks).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)

# -- the relay, on the gateway

CONNECTIONS = Gauge("parley_ws_connections", "Open WebSocket connections on this gateway.")
RELAY_FEEDS = Gauge(
    "parley_relay_feeds",
    "Turn feeds on this gateway: one durable-record subscription per turn, shared by its sockets.",
)
RELAY_SOCKETS = Gauge("parley_relay_sockets", "Sockets being relayed a turn on this gateway.")
RELAY_ITEMS = Counter(
    "parley_relay_items_total",
    "Model items a gateway's feeds took, by the lane that brought them first (live, durable).",
    ["lane"],
)
RELAY_ITEMS_LIVE = RELAY_ITEMS.labels("live")
RELAY_ITEMS_DURABLE = RELAY_ITEMS.labels("durable")
RELAY_READS = Counter(
    "parley_relay_reads_total",
    "Reads of turns' durable records, by kind: update (a long-poll, a history event, billed)"
    " or query.",
    ["kind"],
)
ACTIONS = Counter(
    "parley_actions_total",
    "Protocol frames answered, by action and result (ok, or the error code sent).",
    ["action", "result"],
)

# -- the model and the tools, on the worker

MODEL_CALLS = Counter(
    "parley_model_calls_total",
    "Model calls, by model and outcome (ok, error).",
    ["model", "outcome"],
)
MODEL_CALL_DURATION = Histogram(
    "parley_model_call_duration_seconds",
    "How long model calls took (the streamed request, first byte to last).",
    ["model"],
    buckets=(0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0, 300.0),
)
MODEL_TOKENS = Counter(
    "parley_model_tokens_total",
    "Tokens the model calls spent, by model and kind: input (uncached prompt), cache_write,"
    " cache_read, output.",
    ["model", "kind"],
)
MODEL_COST = Counter(
    "parley_model_cost_usd_total", "What the model calls cost, in USD, by model.", ["model"]
)
TOOL_CALLS = Counter(
    "parley_tool_calls_total",
    "Tool calls, by tool (registered names; `_unknown` for others) and outcome: ok, error,"
    " not_run (declined, expired or cancelled).",
    ["tool", "outcome"],
)

# -- people in the loop (decisions counted where the one guarded UPDATE wins)

APPROVALS_ASKED = Counter("parley_approvals_asked_total", "Write tools parked for approval.")
APPROVALS_DECIDED = Counter(
    "parley_approvals_decided_total",
    "Approvals decided, by decision: approved, denied, expired, cancelled.",
    ["decision"],
)
APPROVALS_PENDING = Gauge(
    "parley_approvals_pending",
    "Approvals waiting for a person, across the deployment (read from PostgreSQL when a"
    " gateway is scraped: every gateway reports the same number).",
)
# Interactions (questions a turn parks on, like approvals): `interaction_asked` where the
# question is recorded, `interaction_decided` where the guarded UPDATE deciding it wins
# (parley.storage.interactions), and the gateway's scrape-time count fills the gauge
# (`gateway.metrics.PENDING`).
INTERACTIONS_ASKED = Counter(
    "parley_interactions_asked_total", "Interactions a turn parked on, by kind.", ["kind"]
)
INTERACTIONS_DECIDED = Counter(
    "parley_interactions_decided_total",
    "Interactions decided, by kind and outcome: submitted, declined, expired, cancelled.",
    ["kind", "outcome"],
)
INTERACTIONS_PENDING = Gauge(
    "parley_interactions_pending",
    "Interactions waiting for a person, across the deployment (read from PostgreSQL when a"
    " gateway is scraped).",
)


def interaction_asked(kind: str) -> None:
    """A turn parked on an interaction of `kind` (a protocol enum value, never free text)."""
    INTERACTIONS_ASKED.labels(kind).inc()


def interaction_decided(kind: str, outcome: str) -> None:
    """An interaction of `kind` was decided with `outcome` (a fixed word)."""
    INTERACTIONS_DECIDED.labels(kind, outcome).inc()


@contextlib.contextmanager
def serve(host: str, port: int) -> Iterator[int]:
    """`/metrics` (any path, in fact) on `host:port` from a thread of its own, for a process
    without an HTTP server (the worker); yields the bound port (`port` 0: any free one)."""
    server, thread = start_http_server(port, addr=host)
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
