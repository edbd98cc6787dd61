"""`submit_interaction`: the visitor's answer to a rich interaction (a form, choice chips).

Checked in PROTOCOL.md's order: the session, then the question it is parked on (none:
NO_PENDING_INTERACTION; another id or kind: INTERACTION_MISMATCH), then a decline, then the
values. Values that break the kind's rules get `interaction_invalid` and the turn stays
parked (at most PARLEY_INTERACTION_MAX_INVALID of those per question). A decline or valid
values are claimed with one guarded UPDATE, as confirms are: of any number of concurrent
submits, on any gateways, exactly one wins, and the ack is queued before the turn is
signalled, so it precedes every resumed event. An answer whose gateway died before
signalling is delivered by the reconciler (`gateway.reconciler`).
"""

from __future__ import annotations

import json
from typing import Any

from gateway.connection import Connection
from gateway.dispatch import Action
from gateway.reconciler import Decisions
from gateway.relay import attach_after_park
from gateway.sessions import require_session
from parley import protocol
from parley.interactions.catalog import BY_NAME
from parley.interactions.identity import IDENTITY_INTAKE
from parley.logs import get_logger
from parley.protocol import ErrorCode, ProtocolError
from parley.storage import interactions, visitors
from parley.turn.types import Answered
from workflows.turn import TurnWorkflow

log = get_logger(__name__)

MAX_VALUES_BYTES = 16 * 1024


async def submit_interaction(conn: Connection, req: protocol.SubmitInteraction) -> None:
    services = conn.services
    await require_session(conn, req.session_id)
    async with services.pool.connection() as db:
        parked = await interactions.pending(db, req.session_id)
    if parked is None:
        raise ProtocolError(
            ErrorCode.NO_PENDING_INTERACTION,
            f"no interaction is awaiting an answer for session '{req.session_id}'",
        )
    if req.interaction_id != parked.id or req.kind not in (None, parked.kind):
        raise ProtocolError(
            ErrorCode.INTERACTION_MISMATCH,
            "this is not the interaction the session is waiting on"
            " (its interactionId or kind differs)",
        )
    if req.declined is not None and not isinstance(req.declined, bool):
        raise ProtocolError(ErrorCode.VALIDATION_ERROR, "'declined' must be a boolean")
    answer: dict[str, Any] | None = None
    if req.declined is not True:
        answer = await _accepted_values(conn, req, parked)
        if answer is None:
            return  # told what to fix; the turn stays parked
    async with services.pool.connection() as db, db.transaction():
        claimed = await interactions.claim(
            db,
            parked.id,
            req.session_id,
            status="submitted" if answer is not None else "declined",
            answer=answer,
            decided_by=conn.describe(),
        )
        if claimed is not None and answer is not None and parked.kind == IDENTITY_INTAKE.name:
            await visitors.store_identity(db, req.session_id, answer)
    if claimed is None:  # answered on another connection a moment ago, or just expired
        raise ProtocolError(
            ErrorCode.NO_PENDING_INTERACTION,
            f"no interaction is awaiting an answer for session '{req.session_id}'",
        )
    declined = claimed.status == "declined"
    conn.outbox.send(
        protocol.immediate_response(
            req.request_id,
            200,
            "Interaction declined" if declined else "Interaction submitted",
            {"sessionId": req.session_id, "interactionId": parked.id, "declined": declined},
        )
    )
    log.info("interaction answered", interaction=parked.id, kind=parked.kind, status=claimed.status)
    if claimed.turn_id not in conn.relays:
        attach_after_park(
            conn, claimed.turn_id, claimed.request_id, parked.id, stream=claimed.stream
        )
    await ANSWERS.deliver(services.temporal, services.pool, claimed)


async def _accepted_values(
    conn: Connection, req: protocol.SubmitInteraction, parked: interactions.Pending
) -> dict[str, Any] | None:
    """The values as the kind accepts them; None after telling the client what to fix
    (`interaction_invalid`), or refusing once the question's invalid submits are spent."""
    values = req.values
    if not isinstance(values, dict):
        raise ProtocolError(
            ErrorCode.VALIDATION_ERROR, "'values' must be an object (or send declined: true)"
        )
    if len(json.dumps(values)) > MAX_VALUES_BYTES:
        raise ProtocolError(
            ErrorCode.VALIDATION_ERROR, f"'values' is larger than {MAX_VALUES_BYTES} bytes"
        )
    accepted, errors = BY_NAME[parked.kind].validate(parked.spec, values)
    if not errors:
        return accepted
    limit = conn.services.settings.interaction_max_invalid
    async with conn.services.pool.connection() as db:
        counted = await interactions.count_invalid(db, parked.id, limit)
        still_open = counted is not None or await interactions.pending(db, req.session_id)
    if counted is None:
        if not still_open:
            raise ProtocolError(
                ErrorCode.NO_PENDING_INTERACTION,
                f"no interaction is awaiting an answer for session '{req.session_id}'",
            )
        raise ProtocolError(
            ErrorCode.RATE_LIMITED,
            f"this interaction has had {limit} invalid answers; send valid values, or"
            " declined: true",
        )
    conn.outbox.send(
        protocol.interaction_invalid(
            parked.request_id, parked.id, parked.kind, [(e.field, e.message) for e in errors]
        )
    )
    return None


ANSWERS = Decisions[interactions.Claimed](
    name="interaction answer",
    signal=lambda c: (
        c.turn_id,
        TurnWorkflow.interaction_answered,
        Answered(c.interaction_id),
    ),
    mark_delivered=lambda db, c: interactions.mark_delivered(db, c.interaction_id),
    undelivered=interactions.undelivered,
)


ACTIONS = (Action("submit_interaction", protocol.SubmitInteraction, submit_interaction),)
