"""`GET /metrics`: the gateway process's Prometheus metrics (`parley.metrics`).

Served on the public listener, or, with `PARLEY_ADMIN_PORT` set, only on the admin one
(like `/admin`: what a deployment spends and how busy it is stays off the internet).
The counts of what waits for a person are the deployment's, not this process's: they are
read from PostgreSQL when the endpoint is scraped (every gateway reports the same value;
aggregate them with `max`), within a short timeout, and left as NaN when it cannot answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from async_lru import alru_cache
from prometheus_client import REGISTRY, Gauge
from prometheus_client.exposition import choose_encoder
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.services import Services
from parley import metrics
from parley.logs import get_logger
from parley.storage import approvals, interactions
from parley.storage.db import Conn

log = get_logger(__name__)

COUNT_TIMEOUT_SECONDS = 2.0

# Gauges read from PostgreSQL at each scrape.
PENDING: list[tuple[Gauge, Callable[[Conn], Awaitable[int]]]] = [
    (metrics.APPROVALS_PENDING, approvals.pending_count),
    (metrics.INTERACTIONS_PENDING, interactions.pending_count),
]


async def metrics_endpoint(request: Request) -> Response:
    services: Services = request.app.state.services
    await _count_pending(services)
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encoder(REGISTRY), media_type=content_type)


@alru_cache(maxsize=8, ttl=0, key=id)
async def _count_pending(services: Services) -> None:
    """Scrapes that arrive while a count runs share it (a flood holds one pool connection,
    not the pool); the next scrape counts afresh."""
    try:
        async with (
            asyncio.timeout(COUNT_TIMEOUT_SECONDS),
            services.pool.connection(timeout=COUNT_TIMEOUT_SECONDS) as conn,
        ):
            for gauge, count in PENDING:
                gauge.set(await count(conn))
    except Exception as err:
        log.warning("could not count pending questions for /metrics", error=type(err).__name__)
        for gauge, _ in PENDING:
            gauge.set(float("nan"))


routes = [Route("/metrics", metrics_endpoint)]
