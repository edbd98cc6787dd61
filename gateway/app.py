"""The gateway's ASGI app: WebSocket `/ws`, `/healthz`, `/readyz`, `/metrics`, the web
chat (`/`, `/widget.js`, `/static/*`: gateway/widget.py), and the approvals desk (`/desk`
and `/api/approvals`: gateway/desk.py).

Serve it with `parley gateway`, or `uvicorn gateway.app:app --ws-max-size 262144` (the size
cap is what closes an oversized frame with 1009 before it is buffered whole).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from async_lru import alru_cache
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway import (
    admin,
    approvals,
    codec,
    desk,
    interactions,
    metrics,
    sessions,
    turns,
    widget,
)
from gateway.auth import InvalidToken, TokenVerifier, principal_of
from gateway.connection import Connection
from gateway.dispatch import Dispatcher
from gateway.feed import Feeds
from gateway.frames import FrameError, decode_frame
from gateway.http_limits import AddressRates
from gateway.live import LiveListener, live_lane
from gateway.outbox import Outbox
from gateway.reconciler import Reconciler
from gateway.services import Services
from gateway.socket_limits import IpConnections, SocketGuard, client_key, refuse_upgrade
from parley import protocol, temporal_client, tracing
from parley.identity import Principal
from parley.logs import get_logger
from parley.metrics import CONNECTIONS
from parley.protocol import ErrorCode
from parley.settings import Settings, get_settings
from parley.storage import approvals as approvals_store
from parley.storage import db, live
from parley.stores import resolve_stores

log = get_logger(__name__)

FIRST_READ_DELAY = timedelta(milliseconds=200)
READINESS_TTL_SECONDS = 1.0


# Every protocol action this gateway answers, by the module that handles it.
DISPATCHER = Dispatcher(sessions.ACTIONS, turns.ACTIONS, approvals.ACTIONS, interactions.ACTIONS)


async def _principal(websocket: WebSocket, services: Services) -> Principal | None:
    """The socket's principal; an invalid token connects as anonymous (logged)."""
    try:
        return await principal_of(services.verifier, websocket)
    except InvalidToken as err:
        log.info("invalid token on connect", reason=str(err))
        return None


async def websocket_endpoint(websocket: WebSocket) -> None:
    services: Services = websocket.app.state.services
    client_ip = client_key(websocket.client)
    with services.ip_connections.hold(client_ip) as admitted:
        if not admitted:
            log.warning("connection refused: too many from one address", client=client_ip)
            await refuse_upgrade(websocket, "too many connections from your address")
            return
        await _serve(websocket, services, client_ip)


async def _serve(websocket: WebSocket, services: Services, client_ip: str) -> None:
    principal = await _principal(websocket, services)
    if principal is None and services.verifier is not None and services.settings.auth_strict:
        await websocket.send_denial_response(
            PlainTextResponse("a valid token is required", status_code=401)
        )
        return
    await websocket.accept()
    outbox = Outbox(websocket)
    outbox.start()
    conn = Connection(
        id=uuid.uuid4().hex[:12],
        services=services,
        outbox=outbox,
        origin=websocket.headers.get("origin"),
        principal=principal,
        client_ip=client_ip,
    )
    guard = SocketGuard(services.settings, busy=lambda: bool(conn.relays))
    log.debug("connection opened", conn=conn.id, origin=conn.origin)
    CONNECTIONS.inc()
    try:
        while not outbox.closed:
            message = await guard.receive(websocket)
            if message is None or message["type"] == "websocket.disconnect":
                break
            refused = guard.refuse(message)
            if guard.closing is not None:
                break
            if refused is not None:
                outbox.send(refused)
                continue
            text = message.get("text")
            if text is None:
                outbox.send(
                    protocol.error(
                        None, ErrorCode.VALIDATION_ERROR, "binary frames are not supported"
                    )
                )
                continue
            try:
                frame = decode_frame(text)
            except FrameError as err:
                outbox.send(protocol.error(err.request_id, ErrorCode.VALIDATION_ERROR, err.message))
                continue
            await DISPATCHER.dispatch(conn, frame)
    except WebSocketDisconnect:
        pass
    finally:
        CONNECTIONS.dec()
        await conn.close()
        await guard.close(websocket)
        log.debug("connection closed", conn=conn.id, why=guard.closing)


async def healthz(_: Request) -> PlainTextResponse:
    """The process is alive (no dependency checks: that is /readyz). Readable from any
    site: the widget asks it whether a refused WebSocket upgrade came from a gateway that
    is up (a browser does not say why an upgrade failed)."""
    return PlainTextResponse("ok", headers={"Access-Control-Allow-Origin": "*"})


async def readyz(request: Request) -> JSONResponse:
    """200 when PostgreSQL and Temporal both answer; 503 naming what does not."""
    problems = await _readiness_problems(request.app.state.services)
    if problems:
        return JSONResponse({"status": "unavailable", "problems": problems}, status_code=503)
    return JSONResponse({"status": "ready"})


@alru_cache(maxsize=8, ttl=READINESS_TTL_SECONDS, key=id)
async def _readiness_problems(services: Services) -> dict[str, str]:
    """What does not answer. Anyone may ask /readyz, so one check runs at a time and its
    answer serves every request for a second: a flood costs one pool connection."""
    problems: dict[str, str] = {}

    async def check_db() -> None:
        try:
            async with asyncio.timeout(3), services.pool.connection(timeout=2) as conn:
                await db.ping(conn)
        except Exception as exc:
            problems["postgres"] = f"unreachable: {type(exc).__name__}"

    async def check_temporal() -> None:
        try:
            await services.temporal.service_client.check_health(timeout=timedelta(seconds=3))
        except Exception as exc:
            problems["temporal"] = f"unreachable: {type(exc).__name__}"

    await asyncio.gather(check_db(), check_temporal())
    return problems


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the app; stores are connected in the lifespan, not at import."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if (problem := admin.configuration_problem(settings)) is not None:
            log.error("refusing to start", problem=problem)
            raise RuntimeError(problem)
        tracing.configure("parley-gateway")
        stores = resolve_stores(settings)
        await db.migrate(stores.database_url)
        pool = db.create_pool(stores.database_url, max_size=settings.db_pool_max, name="gateway")
        await pool.open()
        temporal = await temporal_client.connect(
            stores.temporal_address,
            settings.temporal_namespace,
            payload_keys=settings.payload_keys,
            lazy=True,
        )
        feeds = Feeds(
            temporal,
            settings.relay_poll_cooldown,
            settings.turn_linger,
            settings.relay_update_budget,
            # With the live lane on, a new turn's record stays empty until its first batch.
            first_read_delay=FIRST_READ_DELAY if settings.live_lane else timedelta(0),
        )
        app.state.services = Services(
            settings=settings,
            pool=pool,
            temporal=temporal,
            feeds=feeds,
            verifier=TokenVerifier(settings) if settings.auth == "jwt" else None,
            ip_connections=IpConnections(settings.ws_connections_per_ip),
            http_rates=AddressRates(settings.http_requests_per_ip_per_minute),
        )
        # One listening connection: the live lane (when on) and the desk's approval changes.
        watch = app.state.services.approval_watch
        handlers = {approvals_store.CHANGES_CHANNEL: watch.changed}
        if settings.live_lane:
            handlers[live.CHANNEL] = live_lane(feeds)
        listener = LiveListener(stores.database_url, handlers, watch.changed_everywhere)
        listener.start()
        reconciler = Reconciler(
            temporal, pool, [approvals.VERDICTS, interactions.ANSWERS, desk.EXTENSIONS]
        )
        reconciler.start()
        log.info("gateway ready", temporal=stores.temporal_address)
        try:
            yield
        finally:
            await reconciler.stop()
            await listener.stop()
            await feeds.aclose()
            app.state.services.parser.close()
            await pool.close()

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            *codec.routes(settings),
            *widget.routes,
            *desk.routes,
            WebSocketRoute("/ws", websocket_endpoint),
            # With a listener of its own (PARLEY_ADMIN_PORT), /admin and /metrics are not
            # served here.
            *(admin.routes + metrics.routes if settings.admin_port is None else []),
        ],
        lifespan=lifespan,
    )


app = create_app()
