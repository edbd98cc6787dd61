"""The remote codec endpoint of Temporal's UI and CLI: `POST /codec/encode`, `/codec/decode`.

Served only when `PARLEY_PAYLOAD_KEYS` is set. Both take and answer Temporal's Payloads in
protobuf JSON (`{"payloads": [{"metadata": {...}, "data": "<base64>"}]}`), with the codec of
this gateway's own Temporal client: decode turns encrypted payloads back into the original
ones (others pass through), encode encrypts with the current key.

Guarded by the admin bearer token (`PARLEY_ADMIN_TOKEN`, as `/admin/*`: 404 with no token
configured, 401 without the right one). The UI calls it from the operator's browser, so a
CORS preflight is answered for the origins in `PARLEY_CODEC_CORS_ORIGINS` (no others: a
request from any other origin is refused with 403).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Literal

from google.protobuf import json_format
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.api.common.v1 import Payloads

from gateway.admin import Refused, read_body
from gateway.admin import authorized as admin_authorized
from gateway.services import Services
from parley.logs import get_logger
from parley.payload_codec import EncryptionCodec, PayloadDecryptionError, codec_for
from parley.settings import Settings

log = get_logger(__name__)

MAX_BODY_BYTES = 4 * 1024 * 1024
ALLOWED_HEADERS = "Authorization, Content-Type, X-Namespace"
PREFLIGHT_MAX_AGE = "600"

Operation = Literal["encode", "decode"]
OPERATIONS: tuple[Operation, ...] = ("encode", "decode")


def _error(status: int, message: str, headers: dict[str, str]) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _cors(request: Request) -> tuple[bool, dict[str, str]]:
    """Whether the request's origin may call (no Origin: not a browser, it may), and the
    CORS headers to answer it with."""
    origin = request.headers.get("origin")
    if origin is None:
        return True, {}
    services: Services = request.app.state.services
    allowed = {o.rstrip("/") for o in services.settings.codec_cors_origins}
    if origin.rstrip("/") not in allowed:
        return False, {}
    return True, {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",
        "Vary": "Origin",
    }


def _codec(request: Request) -> EncryptionCodec:
    services: Services = request.app.state.services
    codec = services.temporal.data_converter.payload_codec
    assert isinstance(codec, EncryptionCodec), "the codec routes exist only with keys set"
    return codec


async def _serve(request: Request, operation: Operation) -> Response:
    allowed, cors = _cors(request)
    if not allowed:
        return _error(403, "this origin may not call the codec endpoint", {})
    if request.method == "OPTIONS":
        return Response(
            status_code=204,
            headers={
                **cors,
                "Access-Control-Allow-Methods": "POST, OPTIONS",
                "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
                "Allow": "POST, OPTIONS",
            },
        )
    if (denied := await admin_authorized(request)) is not None:
        denied.headers.update(cors)
        return denied
    if request.state.admin_org is not None:  # an organization's admin: payloads span them all
        return _error(403, "only the operators' admin token may use the codec endpoint", cors)
    try:
        body = await read_body(request, MAX_BODY_BYTES)
    except Refused as refused:
        return _error(refused.status, refused.message, cors)
    expected = 'the body must be Payloads as protobuf JSON, {"payloads": [...]}'
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
        return _error(400, f"{expected}; it is not JSON ({err})", cors)
    if not isinstance(document, dict):
        return _error(400, f"{expected}; it is not a JSON object", cors)
    payloads = Payloads()
    try:
        json_format.ParseDict(document, payloads, ignore_unknown_fields=True)
    except (json_format.ParseError, RecursionError) as err:
        return _error(400, f"{expected}: {err}", cors)

    codec = _codec(request)
    try:
        if operation == "encode":
            out = await codec.encode(payloads.payloads)
        else:
            out = await codec.decode(payloads.payloads)
    except PayloadDecryptionError as err:
        log.warning("codec request refused", operation=operation, error=str(err))
        return _error(400, str(err), cors)
    log.info(
        "codec request",
        operation=operation,
        payloads=len(out),
        namespace=request.headers.get("x-namespace"),
        client=request.client.host if request.client else None,
    )
    answer = json_format.MessageToDict(Payloads(payloads=out))
    answer.setdefault("payloads", [])
    return JSONResponse(answer, headers=cors)


def _endpoint(operation: Operation) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return await _serve(request, operation)

    endpoint.__name__ = f"codec_{operation}"
    return endpoint


def routes(settings: Settings) -> list[Route]:
    """The codec routes when payloads are encrypted; none (404) otherwise. (With no admin
    token configured they answer 404 too, as the admin API does.)"""
    if codec_for(settings.payload_keys) is None:
        return []
    return [Route(f"/codec/{op}", _endpoint(op), methods=["POST", "OPTIONS"]) for op in OPERATIONS]
