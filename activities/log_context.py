"""What every activity shares, as one worker interceptor: each log line an activity writes
carries its turn (the turn id, the activity and its attempt are bound into structlog's
context for the activity's task, so no call site repeats them), and a data error is final.

A value PostgreSQL refuses (`psycopg.DataError`: a NUL in text, a number out of range) will
be refused again on every retry; it fails the activity for good, so the turn ends at once
with its error instead of after minutes of retries."""

from __future__ import annotations

from typing import Any

import psycopg
import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)


class _BindTurn(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        # Most activities run for a turn; others (an approval notice) name their workflow.
        key = "turn_id" if info.workflow_type == "Turn" else "workflow_id"
        with structlog.contextvars.bound_contextvars(
            **{key: info.workflow_id}, activity=info.activity_type, attempt=info.attempt
        ):
            try:
                return await super().execute_activity(input)
            except psycopg.DataError as err:
                raise ApplicationError(
                    f"data refused by PostgreSQL: {type(err).__name__}",
                    type="DataError",
                    non_retryable=True,
                ) from err


class LogContextInterceptor(Interceptor):
    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _BindTurn(next)
