"""The live lane's wire: PostgreSQL LISTEN/NOTIFY on one channel.

A model activity NOTIFYs each item it publishes (a token, a reset) the moment it has it;
every gateway LISTENs and hands the items of the turns it relays to their feeds
(`gateway.feed`). It is a fast path only: NOTIFY is not durable and a gateway that is not
listening misses items, which the turn's durable record (the workflow's stream) still has.

One channel for all turns keeps a gateway's LISTEN fixed (no LISTEN/UNLISTEN per turn on a
busy connection); a gateway drops the items of turns it does not relay. A turn is named on
the wire by a hash of its id, never by the id itself. Payloads stay under PostgreSQL's 8000
bytes: a larger item is simply not sent live.

An item carries the worker's clock when the model activity had it (`sent_at`, Unix
seconds), so a gateway can tell how late it arrived (`parley_delta_lag_seconds`). Decoding
ignores fields it does not know at the end of a payload, so a later version can add some
without breaking the gateways still running this one. (Gateways from before `sent_at`
read exactly six fields and drop newer workers' items, falling back on the durable record:
upgrade gateways before workers.)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from psycopg import sql

from parley.storage.db import Conn
from parley.turn.events import Reset, Token

CHANNEL = "parley_live"
MAX_PAYLOAD_BYTES = 7900


def turn_key(turn_id: str) -> str:
    """The turn's name on the live lane."""
    return hashlib.sha256(turn_id.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class LiveItem:
    """One item of a model call, with what must precede it in the durable record:
    `after` is the number of items the workflow itself had published before the call."""

    turn: str  # turn_key
    after: int
    event: Token | Reset
    sent_at: float = 0.0  # the worker's time.time() when the activity had the item; 0: unknown


def encode(item: LiveItem) -> str | None:
    """The NOTIFY payload, or None when it would be too large to send live."""
    e = item.event
    body: list[object] = [item.turn, item.after, e.call, e.attempt, e.seq]
    body.append(e.text if isinstance(e, Token) else None)
    body.append(round(item.sent_at, 6))
    payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    return payload if len(payload.encode()) <= MAX_PAYLOAD_BYTES else None


def decode(payload: str) -> LiveItem | None:
    """The item, or None for a payload this version does not understand."""
    try:
        turn, after, call, attempt, seq, text, *later = json.loads(payload)
        event: Token | Reset = (
            Token(text, call, attempt, seq) if text is not None else Reset(attempt, call, seq)
        )
        sent_at = float(later[0]) if later else 0.0
        return LiveItem(str(turn), int(after), event, sent_at)
    except (ValueError, TypeError):
        return None


# One statement whatever the batch size: psycopg prepares it once, not once per size.
_NOTIFY = f"select pg_notify('{CHANNEL}', p) from unnest(%s::text[]) with ordinality as t(p, n)"


async def notify(conn: Conn, payloads: list[str]) -> None:
    """Send `payloads` in one statement (one round trip, delivered in array order)."""
    if payloads:
        await conn.execute(_NOTIFY, (payloads,))


async def listen(conn: Conn, channel: str = CHANNEL) -> None:
    """Subscribe `conn` (autocommit) to the live lane (or another channel)."""
    await conn.execute(sql.SQL("listen {}").format(sql.Identifier(channel)))
