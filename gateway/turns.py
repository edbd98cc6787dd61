"""Turn actions (`send_message`, `cancel`, `resume_turn`) and the relay that streams a turn.

A turn is a workflow; this module only claims the session's slot, starts (or finds) the
workflow, and relays its event stream to a connection. Any gateway can relay any turn, from
the start: the stream lives in the workflow, addressed by offset.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from temporalio.client import WorkflowExecutionStatus
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from gateway import limits
from gateway.connection import Connection
from gateway.dispatch import Action
from gateway.relay import attach
from gateway.services import Services
from gateway.sessions import find_session, require_session
from parley import protocol
from parley.attachments import Limits
from parley.logs import get_logger
from parley.protocol import ErrorCode, ProtocolError
from parley.storage import attachments, skills, turns
from parley.storage.sessions import SessionRecord
from parley.turn.types import TurnInput, turn_id
from workflows.turn import TurnWorkflow

log = get_logger(__name__)

# A slot whose workflow cannot be found is only stale once its starter had time to start it.
START_GRACE = timedelta(seconds=30)


async def send_message(conn: Connection, req: protocol.SendMessage) -> None:
    accepted_at = time.monotonic()  # its first token is timed from here (gateway.relay)
    services = conn.services
    settings = services.settings
    carried = Limits(settings.max_images, settings.max_image_bytes, settings.max_files)
    if (problem := carried.problem(req.images, req.files)) is not None:
        raise ProtocolError(ErrorCode.VALIDATION_ERROR, problem)
    session = await require_session(conn, req.session_id)
    if await services.model_keys.for_org(session.org_id) is None:
        raise ProtocolError(
            ErrorCode.LLM_UNAVAILABLE,
            "no model API key is configured for this organization; this server cannot run turns",
        )
    if req.skill is not None:
        await _require_skill(services, session, req.skill)
    await limits.admit_turn(conn, session, req.model)
    tid = turn_id(session.id, req.request_id)
    turn, created = await _claim_slot(services, session, tid, req)
    if created:
        await _start_turn(conn, session, tid, req)
    conn.outbox.send(
        protocol.immediate_response(req.request_id, 202, "Processing your request...", {})
    )
    attach(
        conn, tid, req.request_id, stream=turn.stream, just_started=created, accepted_at=accepted_at
    )


async def resume_turn(conn: Connection, req: protocol.ResumeTurn) -> None:
    """Re-attach to the session's running turn, or to the turn `requestId` names while it
    is running or has just finished (a reload right after the last token): its events are
    replayed from the first."""
    linger = conn.services.settings.turn_linger.total_seconds()
    turn = None
    if await find_session(conn, req.session_id) is not None:
        async with conn.services.pool.connection() as db:
            if req.request_id is None:
                turn = await turns.running_turn(db, req.session_id)
            else:
                turn = await turns.attachable(db, turn_id(req.session_id, req.request_id), linger)
    if turn is None:
        raise ProtocolError(
            ErrorCode.NO_ACTIVE_TURN, f"session '{req.session_id}' has no active turn"
        )
    attach(conn, turn.id, turn.request_id, stream=turn.stream)


async def cancel(conn: Connection, req: protocol.Cancel) -> None:
    """Stop the turn named by requestId: one `cancelled` now, nothing else from it after.

    No active turn: no reply at all (PROTOCOL.md).
    """
    if req.request_id is None:
        return
    if req.session_id is not None:
        if await find_session(conn, req.session_id) is None:
            return  # as for a session with no such turn
        tid = turn_id(req.session_id, req.request_id)
    else:
        tid = next((t for t, r in conn.relays.items() if r.request_id == req.request_id), "")
    if not tid:
        return
    async with conn.services.pool.connection() as db:
        released = await turns.finish(db, tid, "cancelled")
    if not released:
        return
    relay = conn.relays.pop(tid, None)
    if relay is not None:
        await relay.stop()
    conn.outbox.send(protocol.cancelled(req.request_id))
    log.info("turn cancelled", turn=tid)
    try:
        await conn.services.temporal.get_workflow_handle(tid).cancel()
    except RPCError as err:
        log.warning("could not cancel turn workflow", turn=tid, error=err.message)


async def _require_skill(services: Services, session: SessionRecord, name: str) -> None:
    """Fail closed: a turn that names a skill its organization does not have never runs."""
    async with services.pool.connection() as db:
        if await skills.get(db, session.org_id, name) is None:
            raise ProtocolError(ErrorCode.SKILL_NOT_FOUND, f"skill '{name}' not found")


async def _claim_slot(
    services: Services, session: SessionRecord, tid: str, req: protocol.SendMessage
) -> tuple[turns.Turn, bool]:
    """Claim the slot, taking it over from a holder whose workflow is gone."""
    fingerprint = req.fingerprint()
    for _ in range(2):
        try:
            async with services.pool.connection() as db:
                return await turns.claim(
                    db,
                    turn_id=tid,
                    session_id=session.id,
                    request_id=req.request_id,
                    stream=req.stream,
                    fingerprint=fingerprint,
                )
        except turns.RequestIdTaken:
            raise ProtocolError(
                ErrorCode.VALIDATION_ERROR,
                "this requestId was already used for another message in this session;"
                " send each new message with a new requestId",
            ) from None
        except turns.SlotBusy as busy:
            if await _workflow_running(services, busy.holder):
                raise ProtocolError(
                    ErrorCode.TURN_IN_PROGRESS, "this session already has a turn in progress"
                ) from None
            log.warning("taking over a stale turn slot", stale=busy.holder.id)
            async with services.pool.connection() as db:
                await turns.finish(db, busy.holder.id, "abandoned")
    raise ProtocolError(ErrorCode.TURN_IN_PROGRESS, "this session already has a turn in progress")


async def _workflow_running(services: Services, holder: turns.Turn) -> bool:
    try:
        desc = await services.temporal.get_workflow_handle(holder.id).describe()
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        return datetime.now(UTC) - holder.created_at < START_GRACE
    return desc.status == WorkflowExecutionStatus.RUNNING


async def _start_turn(
    conn: Connection, session: SessionRecord, tid: str, req: protocol.SendMessage
) -> None:
    services, settings, principal = conn.services, conn.services.settings, conn.principal
    try:
        if req.images or req.files:  # stored with the message the turn will store
            async with services.pool.connection() as db:
                await attachments.store(db, session.conversation_id, tid, req.images, req.files)
        await services.temporal.start_workflow(
            TurnWorkflow.run,
            TurnInput(
                # Not the session id: it grants access, and Temporal's history is read by
                # operators (activities read it from the turn's row). Turns started before
                # carry it; the field stays for them.
                session_id="",
                request_id=req.request_id,
                conversation_id=session.conversation_id,
                user_participant_id=session.user_participant_id,
                agent_participant_id=session.agent_participant_id,
                org_id=session.org_id,
                agent_id=session.agent_id,
                user_id=session.user_id,
                message=req.message,
                model=req.model or settings.model,
                stream=req.stream,
                max_iterations=settings.max_iterations,
                token_budget=settings.turn_token_budget,
                approval_timeout_seconds=settings.approval_timeout.total_seconds(),
                interaction_timeout_seconds=(
                    settings.interaction_timeout or settings.approval_timeout
                ).total_seconds(),
                linger_seconds=settings.turn_linger.total_seconds(),
                groups=list(principal.groups)
                if principal is not None and principal.groups is not None
                else None,
                skill=req.skill,
            ),
            id=tid,
            task_queue=settings.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
    except WorkflowAlreadyStartedError:
        pass
    except Exception:
        async with services.pool.connection() as db:
            await turns.finish(db, tid, "failed")
            await attachments.delete_turn(db, tid)
        raise
    log.info("turn started", turn=tid)


ACTIONS = (
    Action("send_message", protocol.SendMessage, send_message),
    Action("resume_turn", protocol.ResumeTurn, resume_turn),
    Action("cancel", protocol.Cancel, cancel),
)
