"""The Temporal worker process: `python worker.py`.

Runs the turn workflow and its activities against the configured stores (or the embedded
ones a running `parley dev` records). Tool modules named in `PARLEY_TOOL_MODULES` are
imported first, so their tools are registered before the first turn. With
`PARLEY_WORKER_METRICS_PORT` set it serves its Prometheus metrics there; the `OTEL_*`
variables turn tracing on (`parley.tracing`).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from contextlib import AsyncExitStack
from datetime import timedelta
from typing import Any

from temporalio.worker import Worker

from activities.approvals import ApprovalActivities
from activities.interactions import InteractionActivities
from activities.live import LiveNotifier
from activities.log_context import LogContextInterceptor
from activities.model import ModelActivities
from activities.notify import NotifyActivities
from activities.storage import StorageActivities
from activities.tools import ToolActivities
from parley import metrics, temporal_client, tools, tracing
from parley.escalation import register_escalation
from parley.interactions.tools import register_raise_tools
from parley.knowledge.embeddings import load_embedder
from parley.knowledge.tool import register_knowledge_search
from parley.logs import configure_logging, get_logger
from parley.model_keys import ModelClients, ModelKeys
from parley.settings import Settings, get_settings
from parley.storage import db, tool_labels
from parley.storage.db import Pool
from parley.stores import StoresNotConfigured, resolve_stores
from workflows.notify import ApprovalNoticeWorkflow
from workflows.turn import TurnWorkflow

log = get_logger("parley.worker")


def model_clients(settings: Settings) -> ModelClients:
    """The SDK clients, one per organization's key (PARLEY_MODEL_KEY_RESOLVER)."""
    return ModelClients(ModelKeys(settings), settings.anthropic_base_url)


def turn_activities(
    pool: Pool,
    settings: Settings,
    llm: ModelClients,
    live: LiveNotifier | None = None,
) -> list[Callable[..., Any]]:
    """Every activity the turn workflow calls, bound to this process's pool and clients."""
    model = ModelActivities(
        pool,
        settings,
        tools.registry,
        llm,
        batch_interval=settings.relay_batch_interval,
        live=live,
    )
    tool_runner = ToolActivities(pool, tools.registry)
    storage = StorageActivities(pool)
    approval = ApprovalActivities(pool, tools.registry)
    interaction = InteractionActivities(pool)
    notify = NotifyActivities(pool, allow_private=settings.webhook_allow_private)
    return [
        notify.deliver_approval_notice,
        model.call_model,
        tool_runner.run_tool,
        storage.finish_turn,
        approval.record_approval,
        approval.expire_approval,
        approval.expire_due_approval,
        interaction.record_interaction,
        interaction.expire_interaction,
    ]


async def run_worker(
    settings: Settings, stop: asyncio.Event, ready: asyncio.Event | None = None
) -> None:
    """Serve turns until `stop` is set; `ready` is set once polling has started."""
    register_knowledge_search(
        tools.registry,
        rerank=settings.rerank == "lexical",
        embedder=load_embedder(settings.embeddings),
    )
    register_raise_tools(tools.registry)
    if settings.escalation:
        register_escalation(tools.registry)
    tools.load_modules(settings.tool_modules)
    if settings.demo:
        tools.load_modules(["parley.demo"])
    stores = resolve_stores(settings)
    tracing.configure("parley-worker")
    await db.migrate(stores.database_url)
    async with AsyncExitStack() as stack:
        if settings.worker_metrics_port is not None:
            port = stack.enter_context(
                metrics.serve(settings.worker_metrics_host, settings.worker_metrics_port)
            )
            log.info("worker metrics", url=f"http://{settings.worker_metrics_host}:{port}/metrics")
        pool = db.create_pool(stores.database_url, max_size=settings.db_pool_max, name="worker")
        await pool.open()
        stack.push_async_callback(pool.close)
        async with pool.connection() as conn:  # the gateway serves them to the widget
            await tool_labels.record(conn, tools.registry.labels())
        if settings.demo:
            from parley import demo

            async with pool.connection() as conn:
                summary = await demo.seed_knowledge(
                    conn, settings.org, load_embedder(settings.embeddings)
                )
                await demo.seed_widget(conn, settings.org)
            log.info("demo knowledge", summary=summary.line())
        client = await temporal_client.connect(
            stores.temporal_address, settings.temporal_namespace, payload_keys=settings.payload_keys
        )
        llm = model_clients(settings)
        stack.push_async_callback(llm.aclose)
        live = LiveNotifier(stores.database_url) if settings.live_lane else None
        if live is not None:
            await live.start()
            stack.push_async_callback(live.aclose)
        worker = Worker(
            client,
            task_queue=settings.task_queue,
            workflows=[TurnWorkflow, ApprovalNoticeWorkflow],
            activities=turn_activities(pool, settings, llm, live),
            interceptors=[LogContextInterceptor()],
            max_heartbeat_throttle_interval=timedelta(seconds=1),
            default_heartbeat_throttle_interval=timedelta(seconds=1),
            graceful_shutdown_timeout=timedelta(seconds=5),
        )
        async with worker:
            log.info(
                "worker ready",
                task_queue=settings.task_queue,
                temporal=stores.temporal_address,
                tools=[t.name for t in tools.registry.all()],
            )
            if ready is not None:
                ready.set()
            await stop.wait()
        log.info("worker stopped")


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, payloads=settings.log_payloads)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_worker(settings, stop)

    try:
        asyncio.run(serve())
    except (StoresNotConfigured, tracing.TracingConfigError) as err:
        sys.exit(f"parley worker: {err}")


if __name__ == "__main__":
    main()
