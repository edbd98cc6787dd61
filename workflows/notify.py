"""The ApprovalNotice workflow: one signed webhook POST, retried with backoff until the
receiver takes it (or the retries run out), apart from the turn, so a slow or failing
receiver never holds a turn up.

Started (idempotently, by its id) from the activities that record an approval and that run
the decided write; the secret and the body never enter its history: the activity reads
them from PostgreSQL.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.notify import NotifyActivities
    from parley.webhooks import NoticeInput

DELIVERY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=10),
    maximum_attempts=12,  # about an hour and a half of trying
)


@workflow.defn(name="ApprovalNotice", sandboxed=False)
class ApprovalNoticeWorkflow:
    @workflow.run
    async def run(self, inp: NoticeInput) -> str:
        try:
            return await workflow.execute_activity_method(
                NotifyActivities.deliver_approval_notice,
                inp,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=DELIVERY_RETRY,
            )
        except ActivityError as err:
            refused = isinstance(err.cause, ApplicationError) and err.cause.non_retryable
            why = "refused" if refused else "retries ran out"
            workflow.logger.warning(f"approval notice not delivered: {why}")
            return "undelivered"
