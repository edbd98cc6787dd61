"""Parley's gateway as the turn-latency bench runs it: `python -m bench.counting_gateway`.

The same app (`gateway.app.create_app`) served the same way (`gateway.serve.uvicorn_config`)
as `parley gateway`, plus one read-only route for the bench: GET /bench/feed-counts, how
many turn items this gateway relayed that came first by the live lane and how many by the
durable record (`gateway.feed.FeedCounts`), and how many turn feeds it holds. A bench
cannot read that from another process otherwise, and production has no endpoint for it.
"""

from __future__ import annotations

import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.app import create_app
from gateway.serve import uvicorn_config
from gateway.services import Services
from parley.logs import configure_logging
from parley.settings import get_settings

COUNTS_PATH = "/bench/feed-counts"


async def feed_counts(request: Request) -> JSONResponse:
    services: Services = request.app.state.services
    counts = services.feeds.counts
    return JSONResponse(
        {"live": counts.live, "durable": counts.durable, "feeds": len(services.feeds)}
    )


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings)
    app.router.routes.append(Route(COUNTS_PATH, feed_counts))
    uvicorn.Server(uvicorn_config(app, settings)).run()


if __name__ == "__main__":
    main()
