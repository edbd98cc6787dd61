"""Approval announcements: starting one (from inside another activity) and delivering it
(a signed POST to the organization's webhook; a non-2xx answer or no answer is retried by
the ApprovalNotice workflow's retry policy)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError

from parley import webhooks
from parley.logs import get_logger
from parley.storage import webhooks as store
from parley.storage.db import Conn, Pool
from parley.webhooks import NoticeInput, notice_id

log = get_logger(__name__)

NOTICE_WORKFLOW = "ApprovalNotice"  # workflows.notify


async def announce(conn: Conn, approval_id: str, event: str) -> None:
    """Start the approval's `event` announcement when its organization has a webhook. Call
    it from an activity; it never fails that activity (a notice is not worth a turn)."""
    try:
        if await store.approval_webhook(conn, approval_id) is None:
            return
        await activity.client().start_workflow(
            NOTICE_WORKFLOW,
            NoticeInput(approval_id, event),
            id=notice_id(approval_id, event),
            task_queue=activity.info().task_queue,
        )
    except WorkflowAlreadyStartedError:
        pass  # a retried activity: announced already
    except Exception as err:
        log.warning("could not start an approval notice", kind=event, error=type(err).__name__)


class NotifyActivities:
    def __init__(self, pool: Pool, *, allow_private: bool = False) -> None:
        self._pool = pool
        self._allow_private = allow_private  # PARLEY_WEBHOOK_ALLOW_PRIVATE

    @activity.defn(name="deliver_approval_notice")
    async def deliver_approval_notice(self, inp: NoticeInput) -> str:
        async with self._pool.connection() as conn:
            hook = await store.approval_webhook(conn, inp.approval_id)
            payload = await store.approval_payload(conn, inp.approval_id)
        if hook is None or payload is None:
            return "no webhook"
        delivery = notice_id(inp.approval_id, inp.event)
        body = json.dumps(
            {
                "id": delivery,
                "type": f"approval.{inp.event}",
                "sentAt": datetime.now(UTC).isoformat(),
                **payload,
            },
            default=str,
        ).encode()
        headers = {
            "Content-Type": "application/json",
            webhooks.EVENT_HEADER: f"approval.{inp.event}",
            webhooks.DELIVERY_HEADER: delivery,
            webhooks.SIGNATURE_HEADER: webhooks.sign(hook.secret, body),
            "User-Agent": "parley-webhooks",
        }
        try:
            target = await webhooks.resolve(hook.url, allow_private=self._allow_private)
        except webhooks.PrivateAddress as err:
            log.warning("webhook refused", reason=str(err))
            raise ApplicationError(f"webhook refused: {err}", non_retryable=True) from None
        except OSError as err:  # the name did not resolve (now): retried like no answer
            raise ApplicationError(f"webhook unreachable: {type(err).__name__}") from None
        try:
            answer = await webhooks.post(target, body, headers)
        except httpx.HTTPError as err:
            raise ApplicationError(f"webhook unreachable: {type(err).__name__}") from None
        if not 200 <= answer.status_code < 300:
            raise ApplicationError(f"webhook answered {answer.status_code}")
        return f"delivered ({answer.status_code})"
