"""The turn slot: at most one running turn per session, claimed atomically in PostgreSQL.

A partial unique index (`turns_one_running_per_session`) is the lock, so the claim holds
across every gateway. A running row whose workflow is gone (terminated by an operator, a
gateway that died between claim and start) is taken over by the next claim after the
caller has checked Temporal (see `gateway.turns`).

Turns are counted here (`parley.metrics`), where a claim creates a slot and a release wins
it: on whichever process does so, once per turn (a release rolled back by its caller and
retried counts again).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from parley import metrics
from parley.storage import approvals, interactions, messages
from parley.storage.db import Conn
from parley.storage.sessions import as_uuid
from parley.turn.record import ReplyRecord, cut_short
from parley.turn.types import TurnStatus


@dataclass(frozen=True)
class Turn:
    id: str
    session_id: str
    request_id: str
    status: TurnStatus
    stream: bool
    created_at: datetime


class RequestIdTaken(Exception):
    """The turn id exists, and its send asked something else (another message)."""


class SlotBusy(Exception):
    """Another turn holds the session's slot."""

    def __init__(self, holder: Turn) -> None:
        super().__init__(holder.id)
        self.holder = holder


_COLUMNS = "id, session_id, request_id, status, stream, created_at"


def _turn(row: dict) -> Turn:
    return Turn(
        id=row["id"],
        session_id=str(row["session_id"]),
        request_id=row["request_id"],
        status=row["status"],
        stream=row["stream"],
        created_at=row["created_at"],
    )


async def claim(
    conn: Conn,
    *,
    turn_id: str,
    session_id: str,
    request_id: str,
    stream: bool,
    fingerprint: bytes,
) -> tuple[Turn, bool]:
    """Take the session's slot for `turn_id`: (turn, True) when this call created it,
    (existing turn, False) when the same turn id exists and asked the same (`fingerprint`);
    raises RequestIdTaken when it asked something else, SlotBusy when another turn holds
    the slot."""
    for _ in range(3):  # a holder finishing between our statements: just try again
        cur = await conn.execute(
            "insert into turns (id, session_id, request_id, stream, message_sha256)"
            f" values (%s, %s, %s, %s, %s) on conflict do nothing returning {_COLUMNS}",
            (turn_id, session_id, request_id, stream, fingerprint),
        )
        row = await cur.fetchone()
        if row is not None:
            metrics.TURNS_STARTED.inc()
            return _turn(row), True
        cur = await conn.execute(
            f"select {_COLUMNS}, message_sha256 from turns where id = %s", (turn_id,)
        )
        row = await cur.fetchone()
        if row is not None:
            if row["message_sha256"] not in (None, fingerprint):
                raise RequestIdTaken(turn_id)
            return _turn(row), False
        holder = await running_turn(conn, session_id)
        if holder is not None:
            raise SlotBusy(holder)
    raise RuntimeError(f"could not claim the turn slot of session {session_id}")


async def session_of(conn: Conn, turn_id: str) -> str:
    """The session a turn runs in. Temporal never holds a session id (it grants access to
    the conversation): what runs in a workflow asks PostgreSQL for it by the turn's id."""
    cur = await conn.execute("select session_id from turns where id = %s", (turn_id,))
    row = await cur.fetchone()
    if row is None:
        raise LookupError(f"turn {turn_id} is not recorded")
    return str(row["session_id"])


async def running_turn(conn: Conn, session_id: str) -> Turn | None:
    """The session's running turn, if any."""
    if as_uuid(session_id) is None:
        return None
    cur = await conn.execute(
        f"select {_COLUMNS} from turns where session_id = %s and status = 'running'",
        (session_id,),
    )
    row = await cur.fetchone()
    return _turn(row) if row else None


async def attachable(conn: Conn, turn_id: str, linger_seconds: float) -> Turn | None:
    """The turn if a client may still re-attach to it: running, or finished less than
    `linger_seconds` ago (its workflow still serves its stream)."""
    cur = await conn.execute(
        f"select {_COLUMNS} from turns where id = %s and (status = 'running'"
        " or finished_at > now() - make_interval(secs => %s))",
        (turn_id, linger_seconds),
    )
    row = await cur.fetchone()
    return _turn(row) if row else None


async def status(conn: Conn, turn_id: str) -> TurnStatus | None:
    """The turn's status; None when no such turn was ever claimed."""
    cur = await conn.execute("select status from turns where id = %s", (turn_id,))
    row = await cur.fetchone()
    return row["status"] if row else None


async def finish(conn: Conn, turn_id: str, status: TurnStatus) -> bool:
    """Release the slot with a final status; False when it was no longer running.

    A question the turn was parked on (an approval, an interaction) is closed as `cancelled`
    in the same transaction, so a confirm or a submit can never win one of a turn that is
    over. A turn that ends without its reply (stopped, failed, abandoned) leaves an agent
    message in its place, also in that transaction: it stands before anything a later turn
    of the session adds (the turn's last step then fills in its record).
    """
    async with conn.transaction():
        cur = await conn.execute(
            "update turns set status = %s, finished_at = now()"
            " where id = %s and status = 'running'",
            (status, turn_id),
        )
        await approvals.cancel_pending(conn, turn_id)
        await interactions.cancel_pending(conn, turn_id)
        released = cur.rowcount == 1
        cut = cut_short(status)
        if released and cut is not None:
            await messages.put_cut_short(conn, turn_id, cut, ReplyRecord(cut).to_json())
    if released:
        metrics.TURNS_FINISHED.labels(status).inc()
    return released
