"""Requests per client address on the anonymous HTTP endpoints that read the database
(`GET /widget/agents/{id}`): without it any address could make every request a query.

Kept by the gateway process, like the socket limits (`gateway.socket_limits`), so a refusal
costs no query: a token bucket per address (`FrameRate`) of `PARLEY_HTTP_REQUESTS_PER_IP_PER_MINUTE`
requests at once, refilled at that many per minute. Static files are not counted.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.socket_limits import FrameRate, client_key, retry_hint

MINUTE = 60.0
# Addresses remembered at most; past it the oldest are forgotten (they get a fresh bucket).
MAX_ADDRESSES = 100_000
SWEEP_AT_LEAST = 1024


class AddressRates:
    """A token bucket per client address, at most `per_minute` requests a minute (0: none).

    A bucket that has refilled is forgotten at the next sweep (a fresh one is the same); a
    sweep runs when the table has doubled since the last (at most `MAX_ADDRESSES`), and when
    it is still more than half full after one, the half seen first goes too. So memory follows the
    addresses seen within the last minute, capped, at a constant cost per request.
    """

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._buckets: dict[str, FrameRate] = {}
        self._sweep_at = SWEEP_AT_LEAST

    def take(self, key: str) -> float | None:
        """Admit one request from `key` (None), or refuse it: the seconds to wait."""
        if not self.per_minute:
            return None
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._sweep_at:
                self._sweep()
            rate = self.per_minute / MINUTE
            bucket = FrameRate(rate, self.per_minute, MINUTE, clock=self._clock)
            self._buckets[key] = bucket
        return bucket.take()

    def refuse(self, request: Request) -> JSONResponse | None:
        """The 429 for a request over its address's limit (None: go ahead)."""
        wait = self.take(client_key(request.client))
        if wait is None:
            return None
        return JSONResponse(
            {"error": f"too many requests from your address; {retry_hint(wait)}"},
            status_code=429,
            # Readable by the widget's cross-origin fetch: it says nothing about any agent.
            headers={
                "Retry-After": str(max(1, math.ceil(wait))),
                "Access-Control-Allow-Origin": "*",
            },
        )

    def __len__(self) -> int:
        return len(self._buckets)

    def _sweep(self) -> None:
        kept = {key: bucket for key, bucket in self._buckets.items() if not bucket.full()}
        if len(kept) > MAX_ADDRESSES // 2:  # the newest half stays (insertion order)
            kept = dict(list(kept.items())[len(kept) - MAX_ADDRESSES // 2 :])
        self._buckets = kept
        self._sweep_at = min(MAX_ADDRESSES, max(SWEEP_AT_LEAST, 2 * len(kept)))
