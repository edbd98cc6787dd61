"""Logs never carry what people and the model say, even at DEBUG: a real turn through a
worker and a gateway process logging at DEBUG leaves no trace of the user's message, the
system prompt, the knowledge it was grounded on, the tool's arguments or the reply, unless
`PARLEY_LOG_PAYLOADS` is on (then the model request is logged whole, so this test can fail).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator

import pytest
import structlog

from parley.knowledge import documents
from parley.knowledge.types import Access, Document
from parley.logs import configure_logging, get_logger
from parley.settings import Settings
from parley.stack.fake_anthropic import FakeAnthropic, Reply, ToolCall
from parley.storage import organizations
from tests.conftest import Processes
from tests.helpers import WsClient, run_turn


def marker(kind: str) -> str:
    return f"{kind}{uuid.uuid4().hex}"


async def logs_of_a_turn(
    settings: Settings, processes: Processes, fake_model: FakeAnthropic, pool, payloads: bool
) -> tuple[str, dict[str, str]]:
    """Everything a worker and a gateway logged at DEBUG over one turn, and the markers the
    turn carried."""
    marks = {k: marker(k) for k in ("user", "system", "knowledge", "tool", "reply")}
    org_id = f"org-{uuid.uuid4().hex[:8]}"
    async with pool.connection() as conn:
        await organizations.set_persona(conn, org_id, f"You are Bolt. Secret: {marks['system']}")
        policy = f"# Shipping\n\nOrders ship within two days. Internal code {marks['knowledge']}."
        await documents.upsert_document(
            conn, org_id, Document("ship.md", "Shipping", "ship.md", policy, Access(public=True))
        )
    env = {
        "PARLEY_LOG_LEVEL": "DEBUG",
        "PARLEY_ORG": org_id,
        "PARLEY_LOG_PAYLOADS": "true" if payloads else "false",
    }
    own = settings.model_copy(update={"task_queue": f"logs-{uuid.uuid4().hex[:8]}"})
    worker = processes.worker(own, capture=True, **env)
    gateway, port = await processes.gateway(own, capture=True, **env)
    await worker.wait_for_line("worker ready", timeout=60)
    fake_model.enqueue(
        # The tool fails with its argument in the error: a traceback in the worker's log.
        Reply(tool_calls=[ToolCall("flaky_inventory", {"sku": marks["tool"]})]),
        Reply(text=f"Your order ships soon: {marks['reply']}"),
    )
    async with await WsClient.open(f"ws://127.0.0.1:{port}/ws") as client:
        session = await client.create_session(str(uuid.uuid4()))
        message = f"When do orders ship? My reference is {marks['user']}"
        events = await run_turn(client, session["sessionId"], message, "r1", timeout=60)
    assert events[-1]["type"] == "eventual_response", events[-1]
    # The turn carried every marker to the model, so a log of its requests would show them.
    first, second = (str(r.body) for r in fake_model.requests)
    assert all(marks[k] in first for k in ("user", "system", "knowledge"))
    assert marks["tool"] in second
    await asyncio.to_thread(gateway.stop)  # so each has written everything it will
    await asyncio.to_thread(worker.stop)
    return worker.output + gateway.output, marks


async def test_debug_logs_carry_no_payloads(
    settings: Settings, processes: Processes, fake_model: FakeAnthropic, pool
) -> None:
    output, marks = await logs_of_a_turn(settings, processes, fake_model, pool, payloads=False)
    leaked = {kind for kind, mark in marks.items() if mark in output}
    assert leaked == set(), f"found in the logs: {sorted(leaked)}"
    assert "connection opened" in output  # DEBUG was on: the gateway's own debug lines
    assert "tool failed" in output and "RuntimeError: [redacted" in output


async def test_debug_logs_carry_payloads_when_asked(
    settings: Settings, processes: Processes, fake_model: FakeAnthropic, pool
) -> None:
    output, marks = await logs_of_a_turn(settings, processes, fake_model, pool, payloads=True)
    assert all(marks[k] in output for k in ("user", "system", "knowledge", "tool")), output[-3000:]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """This process's logging as it was (configure_logging changes it process-wide)."""
    names = ["", "anthropic", "httpx", "httpx2", "httpcore", "httpcore2", "temporalio"]
    names += ["websockets", "uvicorn"]
    loggers = [logging.getLogger(name or None) for name in [*names, "uvicorn.access"]]
    levels = [logger.level for logger in loggers]
    handlers = logging.getLogger().handlers[:]
    yield
    logging.getLogger().handlers[:] = handlers
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)
    structlog.reset_defaults()


@pytest.mark.usefixtures("restore_logging")
def test_payload_keys_are_redacted_in_parley_own_lines(capfd: pytest.CaptureFixture[str]) -> None:
    text = marker("said")
    configure_logging("DEBUG", "json")
    get_logger("gateway.test").debug("a line", message=text, arguments={"q": text}, turn="t-1")
    logging.getLogger("anthropic._base_client").debug("Request options: %s", text)
    logging.getLogger("anthropic._base_client").info("Retrying request")
    failed(text)
    err = capfd.readouterr().err
    assert text not in err
    assert f'"message": "[redacted {len(text)} chars]"' in err and '"turn": "t-1"' in err
    assert "Retrying request" in err  # libraries' INFO still gets through
    assert "in failed" in err and "KeyError: [redacted" in err  # where it failed, not what
    configure_logging("DEBUG", "json", payloads=True)
    get_logger("gateway.test").debug("a line", message=text)
    logging.getLogger("anthropic._base_client").debug("Request options: %s", text)
    failed(text)
    assert capfd.readouterr().err.count(text) == 3


def failed(text: str) -> None:
    try:
        raise KeyError(f"no order {text}")
    except KeyError:
        get_logger("gateway.test").exception("lookup failed")
