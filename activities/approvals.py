"""Recording a parked write's question, and expiring it when nobody answers in time."""

from __future__ import annotations

from temporalio import activity

from activities.notify import announce
from parley.storage import approvals, turns
from parley.storage.db import Pool
from parley.tools import ToolRegistry
from parley.turn.types import ApprovalDue, ApprovalInput, Verdict


class ApprovalActivities:
    def __init__(self, pool: Pool, tools: ToolRegistry | None = None) -> None:
        self._pool = pool
        self._tools = tools

    @activity.defn(name="record_approval")
    async def record_approval(self, inp: ApprovalInput) -> None:
        """Record the question, with who may decide it and the tool's schema (the desk
        validates an approver's edits against it); the stored sentence is the tool's own,
        without the visitor's "waiting for a team member"."""
        call = inp.call
        tool = self._tools.get(call.name) if self._tools is not None else None
        async with self._pool.connection() as conn:
            await approvals.record(
                conn,
                approval_id=inp.approval_id,
                turn_id=inp.turn_id,
                session_id=inp.session_id or await turns.session_of(conn, inp.turn_id),
                request_id=inp.request_id,
                tool_call_id=inp.call.id,
                tool_name=inp.call.name,
                arguments=inp.call.arguments,
                description=tool.action_description(call.arguments)
                if tool is not None
                else call.description,
                deadline=inp.deadline,
                approvers=tool.approvers if tool is not None else ("visitor",),
                parameters=tool.parameters if tool is not None else None,
            )
            await announce(conn, inp.approval_id, "requested")

    @activity.defn(name="expire_approval")
    async def expire_approval(self, approval_id: str) -> Verdict:
        """Expire the approval; returns the decision that stands (a confirm may have won).

        Only turns that parked before the `approval-expiry-honours-db` patch still call it
        (kept registered for them): newer ones use `expire_due_approval`."""
        async with self._pool.connection() as conn:
            return await approvals.expire(conn, approval_id)

    @activity.defn(name="expire_due_approval")
    async def expire_due_approval(self, approval_id: str) -> ApprovalDue:
        """Expire the approval if its stored deadline has passed (PostgreSQL's clock);
        otherwise report the later deadline, which the turn then waits for."""
        async with self._pool.connection() as conn:
            decision, deadline = await approvals.expire_if_due(conn, approval_id)
        return ApprovalDue(decision, deadline)
