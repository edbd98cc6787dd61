"""`confirm_tool_action`: claim the session's pending approval, ack, then signal the turn.

The claim is one guarded UPDATE in PostgreSQL, so exactly one of any number of concurrent
confirms (on any gateways) wins; the rest get NO_PENDING_CONFIRMATION. The ack is queued
before the signal is sent, so it precedes every resumed event on the confirming socket.
A verdict whose gateway died between claim and signal is delivered by the reconciler
(`gateway.reconciler`, with `deliver_stranded`).
"""

from __future__ import annotations

from temporalio.client import Client

from gateway.connection import Connection
from gateway.dispatch import Action
from gateway.reconciler import signal_turn
from gateway.relay import attach_after_park
from gateway.sessions import find_session
from parley import protocol
from parley.logs import get_logger
from parley.protocol import ErrorCode, ProtocolError
from parley.storage import approvals
from parley.storage.db import Pool
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
    await deliver(services.temporal, services.pool, claimed)


async def deliver(temporal: Client, pool: Pool, claimed: approvals.Claimed) -> bool:
    """Signal the verdict to its turn and record the delivery; False when it must wait."""
    decision = Decision(claimed.approval_id, claimed.approved)
    if not await signal_turn(temporal, claimed.turn_id, TurnWorkflow.verdict, decision):
        return False
    async with pool.connection() as db:
        await approvals.mark_delivered(db, claimed.approval_id)
    return True


async def deliver_stranded(temporal: Client, pool: Pool, grace: float) -> None:
    """The reconciler's pass for verdicts claimed but never signalled."""
    async with pool.connection() as db:
        stranded = await approvals.undelivered(db, grace)
    for claimed in stranded:  # signalled without holding a connection
        log.info("delivering a stranded verdict", approval=claimed.approval_id)
        await deliver(temporal, pool, claimed)


ACTIONS = (Action("confirm_tool_action", protocol.ConfirmToolAction, confirm_tool_action),)
