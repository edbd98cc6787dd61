"""`confirm_tool_action`: claim the session's pending approval, ack, then signal the turn.

The claim is one guarded UPDATE in PostgreSQL, so exactly one of any number of concurrent
confirms (on any gateways) wins; the rest get NO_PENDING_CONFIRMATION. The ack is queued
before the signal is sent, so it precedes every resumed event on the confirming socket.
A verdict whose gateway died between claim and signal is delivered by the reconciler
(`gateway.reconciler`).
"""

from __future__ import annotations

from gateway.connection import Connection
from gateway.dispatch import Action
from gateway.reconciler import Decisions
from gateway.relay import attach_after_park
from gateway.sessions import find_session
from parley import protocol
from parley.logs import get_logger
from parley.protocol import ErrorCode, ProtocolError
from parley.storage import approvals
from parley.turn.types import Decision
from workflows.turn import TurnWorkflow

log = get_logger(__name__)


async def confirm_tool_action(conn: Connection, req: protocol.ConfirmToolAction) -> None:
    services = conn.services
    claimed = None
    if await find_session(conn, req.session_id) is not None:
        async with services.pool.connection() as db:
            claimed = await approvals.claim(
                db, req.session_id, approved=req.approved, decided_by=conn.describe()
            )
    if claimed is None:
        raise ProtocolError(
            ErrorCode.NO_PENDING_CONFIRMATION,
            f"no tool action is awaiting confirmation for session '{req.session_id}'",
        )
    conn.outbox.send(
        protocol.immediate_response(
            req.request_id,
            200,
            "Tool action approved" if req.approved else "Tool action rejected",
            {"sessionId": req.session_id, "approved": req.approved},
        )
    )
    log.info("approval decided", approval=claimed.approval_id, approved=req.approved)
    if claimed.turn_id not in conn.relays:
        attach_after_park(
            conn, claimed.turn_id, claimed.request_id, claimed.approval_id, stream=claimed.stream
        )
    await VERDICTS.deliver(services.temporal, services.pool, claimed)


VERDICTS = Decisions[approvals.Claimed](
    name="verdict",
    signal=lambda c: (c.turn_id, TurnWorkflow.verdict, Decision(c.approval_id, c.approved)),
    mark_delivered=lambda db, c: approvals.mark_delivered(db, c.approval_id),
    undelivered=approvals.undelivered,
)


ACTIONS = (Action("confirm_tool_action", protocol.ConfirmToolAction, confirm_tool_action),)
