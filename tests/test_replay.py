"""Replay safety: recorded histories of representative turns replay against today's workflow.

A worker that picks up a running turn replays its history first; if the workflow code now
issues a different command sequence, that turn fails with a nondeterminism error. Every
fixture in `tests/histories/` is replayed here, so such a change fails the suite instead of
the turns in flight. Changes to the command sequence go behind `workflow.patched(...)`, and
the histories recorded before such a change are kept under another name (say
`plain_reply.pre-<patch-id>.json`) before re-recording: every `*.json` here is replayed.

Re-record the fixtures against the real stack (dev server, PostgreSQL, gateway, worker, the
fake model) with one command, which records every scenario and then replays the new files:

    PARLEY_RECORD_HISTORIES=1 .venv/bin/python -m pytest tests/test_replay.py

(`make record-histories` does the same.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError, WorkflowHistory
from temporalio.converter import DataConverter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from parley import temporal_client
from parley.settings import Settings
from parley.stack.fake_anthropic import FakeAnthropic, Reply, ToolCall
from parley.turn.types import TurnInput, TurnOutcome
from tests.helpers import (
    GatewayServer,
    WsClient,
    history_holds,
    is_terminal,
    kinds,
    run_turn,
    tokens,
)
from tests.test_approvals import REFUND, confirm, park
from tests.test_identity import AUDIENCE, ISSUER, SECRET, hs256
from tests.test_interactions import ASK_CONTACT, SUPPORTS, submit
from workflows.turn import BUDGET_NOTICE, TurnWorkflow

HISTORIES = Path(__file__).parent / "histories"
RECORDING = os.environ.get("PARLEY_RECORD_HISTORIES") == "1"


# -- what each fixture must show ----------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """The Temporal-level outline of a turn's history: what makes a fixture the scenario it
    is named after (payloads and timing differ on every recording; this does not)."""

    activities: tuple[str, ...]  # activity types, in the order they were scheduled
    ending: str = "completed"  # the closing event: completed | canceled | failed | ...
    verdicts: int = 0  # `verdict` signals received
    answers: int = 0  # `interaction_answered` signals received
    timers_fired: int = 0
    retried: tuple[str, ...] = ()  # activities whose recorded attempt is > 1

    @classmethod
    def of(cls, history: WorkflowHistory) -> Shape:
        scheduled: dict[int, str] = {}
        retried: list[str] = []
        verdicts = answers = fired = 0
        for event in history.events:
            if event.HasField("activity_task_scheduled_event_attributes"):
                name = event.activity_task_scheduled_event_attributes.activity_type.name
                scheduled[event.event_id] = name
            elif event.HasField("activity_task_started_event_attributes"):
                started = event.activity_task_started_event_attributes
                if started.attempt > 1:
                    retried.append(scheduled[started.scheduled_event_id])
            elif event.HasField("workflow_execution_signaled_event_attributes"):
                signal = event.workflow_execution_signaled_event_attributes.signal_name
                verdicts += signal == "verdict"
                answers += signal == "interaction_answered"
            elif event.HasField("timer_fired_event_attributes"):
                fired += 1
        last = EventType.Name(history.events[-1].event_type)
        return cls(
            activities=tuple(scheduled.values()),
            ending=last.removeprefix("EVENT_TYPE_WORKFLOW_EXECUTION_").lower(),
            verdicts=verdicts,
            answers=answers,
            timers_fired=fired,
            retried=tuple(retried),
        )


READ_TOOL = ToolCall("order_status", {"order_id": "ORD-7"})

ANSWER = ("call_model", "finish_turn")
READ = ("call_model", "run_tool", "call_model", "finish_turn")
WRITE = ("call_model", "record_approval", "run_tool", "call_model", "finish_turn")
EXPIRED = (
    "call_model",
    "record_approval",
    "expire_due_approval",
    "run_tool",
    "call_model",
    "finish_turn",
)
ASKED = ("call_model", "record_interaction", "run_tool", "call_model", "finish_turn")
ASK_EXPIRED = (
    "call_model",
    "record_interaction",
    "expire_interaction",
    "run_tool",
    "call_model",
    "finish_turn",
)


# -- how each scenario is driven (recording only) -----------------------------------------


@dataclass
class Take:
    """One recorded turn: a connection with a fresh session, and the scripted model."""

    client: WsClient
    session: dict[str, Any]
    model: FakeAnthropic
    request_id: str = "rec"
    gateway: GatewayServer | None = None  # the gateway it runs on (for the desk's HTTP API)

    @property
    def session_id(self) -> str:
        return self.session["sessionId"]


async def plain_reply(t: Take) -> None:
    t.model.enqueue(Reply(text="Hi there."))
    events = await run_turn(t.client, t.session_id, "hi", t.request_id)
    assert tokens(events) == "Hi there." and events[-1]["type"] == "eventual_response"


async def read_tool(t: Take) -> None:
    t.model.enqueue(Reply(tool_calls=[READ_TOOL]), Reply(text="Shipped."))
    events = await run_turn(t.client, t.session_id, "Where is ORD-7?", t.request_id)
    assert tool_result(events)["isError"] is False and events[-1]["type"] == "eventual_response"


async def text_around_tool(t: Take) -> None:
    """Both model calls said something: the reply joins them as paragraphs (patched)."""
    t.model.enqueue(Reply(text="Let me check.", tool_calls=[READ_TOOL]), Reply(text="Shipped."))
    events = await run_turn(t.client, t.session_id, "Where is ORD-7?", t.request_id)
    assert events[-1]["data"]["data"]["response"]["responseParts"] == ["Let me check.\n\nShipped."]


def tool_result(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The toolResult chunk the client saw."""
    chunk = next(e for e in events if kinds([e]) == ["chunk:toolResult"])
    return chunk["data"]["state"]["rawResponse"]["toolResult"]


async def _decide(t: Take, approved: bool) -> dict[str, Any]:
    """Park on a write, give the verdict, and return the tool result the client saw."""
    t.model.enqueue(Reply(tool_calls=[REFUND]), Reply(text="Done."))
    await park(t.client, t.session, t.request_id)
    await t.client.send(confirm(t.session, approved))
    events = await t.client.recv_until(is_terminal(t.request_id))
    assert events[-1]["type"] == "eventual_response"
    return tool_result(events)


async def approved_write(t: Take) -> None:
    assert (await _decide(t, approved=True))["isError"] is False


async def denied_write(t: Take) -> None:
    assert "declined" in (await _decide(t, approved=False))["result"]


async def expired_approval(t: Take) -> None:
    t.model.enqueue(Reply(tool_calls=[REFUND]), Reply(text="It expired."))
    await park(t.client, t.session, t.request_id)
    events = await t.client.recv_until(is_terminal(t.request_id))
    assert "expired" in tool_result(events)["result"] and events[-1]["type"] == "eventual_response"


async def expiry_deferred(t: Take) -> None:
    """The approval's deadline moved later in PostgreSQL only (an extension whose signal
    never came): at the turn's timer the expiry finds it and waits again; the visitor then
    approves."""
    assert t.gateway is not None
    t.model.enqueue(Reply(tool_calls=[REFUND]), Reply(text="Done."))
    await park(t.client, t.session, t.request_id)
    async with t.gateway.services.pool.connection() as conn:
        cur = await conn.execute(
            "update approvals set deadline = deadline + interval '10 minutes'"
            " where session_id = %s returning turn_id",
            (t.session_id,),
        )
        asked = await cur.fetchone()
    assert asked is not None
    handle = t.gateway.services.temporal.get_workflow_handle(asked["turn_id"])
    # The second approval timer: it waits again.
    await history_holds(handle, "timer_started_event_attributes", 2)
    await t.client.send(confirm(t.session, True))
    events = await t.client.recv_until(is_terminal(t.request_id))
    assert tool_result(events)["isError"] is False


async def cancelled_mid_stream(t: Take) -> None:
    t.model.enqueue(Reply(text="never finished", pause_after=2))
    await t.client.send(
        {
            "action": "send_message",
            "requestId": t.request_id,
            "sessionId": t.session_id,
            "message": "go",
        }
    )
    await t.model.await_paused()
    await t.client.send({"action": "cancel", "requestId": t.request_id, "sessionId": t.session_id})
    events = await t.client.recv_until(is_terminal(t.request_id))
    assert events[-1]["type"] == "cancelled"
    await t.model.await_disconnected()


async def retried_model_call(t: Take) -> None:
    t.model.enqueue(Reply(status=529), Reply(text="Recovered."))  # 529: overloaded_error
    events = await run_turn(t.client, t.session_id, "hi", t.request_id)
    assert "chunk:reset" in kinds(events) and tokens(events) == "Recovered."


async def token_budget_spent(t: Take) -> None:
    """The first call spends the turn's budget (500 tokens) and asks for a tool: the turn
    ends there, with a notice, and the tool never runs."""
    t.model.enqueue(Reply(tool_calls=[READ_TOOL], input_tokens=400, output_tokens=150))
    events = await run_turn(t.client, t.session_id, "Where is ORD-7?", t.request_id)
    assert tokens(events) == BUDGET_NOTICE and events[-1]["type"] == "eventual_response"


async def _ask(t: Take, *, supports: list[str]) -> dict[str, Any]:
    """On a session with `supports`, a turn whose model raises the identity form; returns the
    first event after the 202 (`interaction_required` when it parked)."""
    t.session = await t.client.create_session(str(uuid.uuid4()), supports=supports)
    t.model.enqueue(Reply(tool_calls=[ASK_CONTACT]), Reply(text="Thanks."))
    await t.client.send(
        {
            "action": "send_message",
            "requestId": t.request_id,
            "sessionId": t.session_id,
            "message": "a quote, please",
        }
    )
    return (await t.client.recv_until(lambda e: e["type"] != "immediate_response"))[-1]


async def interaction_submitted(t: Take) -> None:
    asked = await _ask(t, supports=SUPPORTS)
    assert asked["type"] == "interaction_required"
    await t.client.send(submit(t.session_id, asked, values={"email": "ada@example.com"}))
    events = await t.client.recv_until(is_terminal(t.request_id))
    assert tool_result(events)["result"]["status"] == "submitted"


async def interaction_expired(t: Take) -> None:
    assert (await _ask(t, supports=SUPPORTS))["type"] == "interaction_required"
    events = await t.client.recv_until(is_terminal(t.request_id))
    assert tool_result(events)["result"]["status"] == "no_response"


async def interaction_not_shown(t: Take) -> None:
    """Without the capability the raise tool answers at once."""
    assert kinds([await _ask(t, supports=[])]) == ["chunk:toolCall"]
    events = await t.client.recv_until(is_terminal(t.request_id))
    assert tool_result(events)["result"]["status"] == "no_response"


async def desk_extended_edited(t: Take) -> None:
    """A team-approved write (2 s timeout): the desk extends it, its first timer fires, then
    an approver approves it with edited arguments."""
    assert t.gateway is not None
    t.model.enqueue(Reply(tool_calls=[ToolCall("hasty_refund", {"order_id": "ORD-1"})]))
    t.model.enqueue(Reply(text="Refunded."))
    await park(t.client, t.session, t.request_id)
    async with t.gateway.services.pool.connection() as conn:
        cur = await conn.execute(
            "select id, turn_id from approvals where session_id = %s", (t.session_id,)
        )
        asked = await cur.fetchone()
    assert asked is not None
    token = hs256(sub="sam", org=t.gateway.services.settings.org, role="support")
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=t.gateway.http_url, headers=headers) as http:
        url = f"/api/approvals/{asked['id']}"
        assert (await http.post(f"{url}/extend", json={"seconds": 600})).status_code == 200
        handle = t.gateway.services.temporal.get_workflow_handle(asked["turn_id"])
        async with asyncio.timeout(30):
            while not any(
                e.HasField("timer_fired_event_attributes")
                for e in (await handle.fetch_history()).events
            ):
                await asyncio.sleep(0.2)
        decided = await http.post(
            f"{url}/decision", json={"approved": True, "arguments": {"order_id": "ORD-2"}}
        )
        assert decided.status_code == 200
    events = await t.client.recv_until(is_terminal(t.request_id))
    assert tool_result(events)["result"].endswith('"refunded": true}')


async def escalated(t: Take) -> None:
    """The model hands the conversation to a person: the turn ends with the escalation."""
    call = ToolCall("escalate_to_human", {"reason": "The customer asks for a person."})
    t.model.enqueue(Reply(tool_calls=[call]), Reply(text="A person will follow up here."))
    events = await run_turn(t.client, t.session_id, "A person, please.", t.request_id)
    assert events[-1]["data"]["data"]["needsEscalation"] is True


@dataclass(frozen=True)
class Scenario:
    drive: Callable[[Take], Awaitable[None]]
    shape: Shape
    settings: dict[str, Any] = field(default_factory=dict)  # a gateway of its own, if set


SCENARIOS: dict[str, Scenario] = {
    # A finished turn lingers on a timer (PARLEY_TURN_LINGER) so a reload can re-attach.
    "plain_reply": Scenario(plain_reply, Shape(ANSWER, timers_fired=1)),
    "read_tool": Scenario(read_tool, Shape(READ, timers_fired=1)),
    "text_around_tool": Scenario(text_around_tool, Shape(READ, timers_fired=1)),
    "approved_write": Scenario(approved_write, Shape(WRITE, verdicts=1, timers_fired=1)),
    "denied_write": Scenario(denied_write, Shape(WRITE, verdicts=1, timers_fired=1)),
    "expired_approval": Scenario(
        expired_approval,
        Shape(EXPIRED, timers_fired=2),
        settings={"approval_timeout": timedelta(seconds=1)},
    ),
    # The approval timer fired, the expiry found a later deadline in PostgreSQL and started
    # another timer, which the verdict then cancelled (the linger is the other timer fired).
    "expiry_deferred": Scenario(
        expiry_deferred,
        Shape(EXPIRED, verdicts=1, timers_fired=2),
        settings={"approval_timeout": timedelta(seconds=1)},
    ),
    "cancelled_mid_stream": Scenario(cancelled_mid_stream, Shape(ANSWER, ending="canceled")),
    "retried_model_call": Scenario(
        retried_model_call, Shape(ANSWER, timers_fired=1, retried=("call_model",))
    ),
    "token_budget_spent": Scenario(
        token_budget_spent, Shape(ANSWER, timers_fired=1), settings={"turn_token_budget": 500}
    ),
    "interaction_submitted": Scenario(
        interaction_submitted, Shape(ASKED, answers=1, timers_fired=1)
    ),
    "interaction_expired": Scenario(
        interaction_expired,
        Shape(ASK_EXPIRED, timers_fired=2),
        settings={"interaction_timeout": timedelta(seconds=1)},
    ),
    "interaction_not_shown": Scenario(interaction_not_shown, Shape(ASKED, timers_fired=1)),
    "escalated": Scenario(escalated, Shape(READ, timers_fired=1)),
    # The tool's own timer fired (the linger is the other), yet the write ran: the desk's
    # extension started a second approval timer, which the verdict then cancelled.
    "desk_extended_edited": Scenario(
        desk_extended_edited,
        Shape(WRITE, verdicts=1, timers_fired=2),
        settings={
            "auth": "jwt",
            "jwt_secret": SecretStr(SECRET),
            "jwt_issuer": ISSUER,
            "jwt_audience": AUDIENCE,
        },
    ),
}


def load(name: str) -> WorkflowHistory:
    """A fixture, under a made-up workflow id: replay must not depend on the id's format."""
    path = HISTORIES / f"{name}.json"
    if not path.exists():
        pytest.fail(f"{path} is missing; re-record: PARLEY_RECORD_HISTORIES=1 pytest {__file__}")
    return WorkflowHistory.from_json(f"replay-{name}", path.read_text())


def fixture_names() -> list[str]:
    """Every scenario (a missing file fails), plus any other history dropped in the folder."""
    return sorted(SCENARIOS.keys() | {p.stem for p in HISTORIES.glob("*.json")})


@pytest.fixture(scope="module")
async def data_converter() -> DataConverter:
    """The converter of the worker's own client, built by the same `connect` (lazily: it
    never dials the address, replay needs no server)."""
    client = await temporal_client.connect(
        "127.0.0.1:7233", "default", payload_keys=None, lazy=True
    )
    return client.data_converter


# -- recording ----------------------------------------------------------------------------


async def _workflow_id(gateway: GatewayServer, session_id: str, request_id: str) -> str:
    """The turn's workflow id as the gateway stored it with the slot (whatever its format)."""
    async with gateway.services.pool.connection() as conn:
        cur = await conn.execute(
            "select id from turns where session_id = %s and request_id = %s",
            (session_id, request_id),
        )
        row = await cur.fetchone()
    assert row is not None, (session_id, request_id)
    return row["id"]


def _write(name: str, history: WorkflowHistory) -> None:
    """Replace the fixture in one step, so an interrupted run leaves the old one intact."""
    HISTORIES.mkdir(exist_ok=True)
    path = HISTORIES / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(history.to_json() + "\n")
    tmp.replace(path)


@contextlib.asynccontextmanager
async def _gateway_for(
    scenario: Scenario, shared: GatewayServer, settings: Settings
) -> AsyncIterator[GatewayServer]:
    """The suite's gateway, or one of the scenario's own when it needs other settings."""
    if not scenario.settings:
        yield shared
        return
    own = GatewayServer(settings.model_copy(update=scenario.settings))
    await own.start()
    try:
        yield own
    finally:
        await own.stop()


@pytest.mark.skipif(not RECORDING, reason="set PARLEY_RECORD_HISTORIES=1 to re-record")
@pytest.mark.usefixtures("worker")
@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_record_history(
    name: str,
    gateway: GatewayServer,
    settings: Settings,
    fake_model: FakeAnthropic,
    temporal_env: WorkflowEnvironment,
) -> None:
    """Drive the scenario through the real stack and store its closed workflow's history."""
    scenario = SCENARIOS[name]
    async with (
        _gateway_for(scenario, gateway, settings) as gw,
        await WsClient.open(gw.ws_url) as client,
    ):
        take = Take(client, await client.create_session(str(uuid.uuid4())), fake_model, gateway=gw)
        await scenario.drive(take)
    handle = temporal_env.client.get_workflow_handle(
        await _workflow_id(gateway, take.session_id, take.request_id)
    )
    with contextlib.suppress(WorkflowFailureError):  # a cancelled turn ends as a failure
        await handle.result()
    history = await handle.fetch_history()
    assert Shape.of(history) == scenario.shape
    _write(name, history)


# -- replay -------------------------------------------------------------------------------


def test_fixtures_cover_every_scenario() -> None:
    missing = sorted(SCENARIOS.keys() - {p.stem for p in HISTORIES.glob("*.json")})
    assert not missing, f"no history recorded for {missing}; re-record (see the module docstring)"
    for name, scenario in SCENARIOS.items():
        assert Shape.of(load(name)) == scenario.shape, name


@pytest.mark.parametrize("name", fixture_names())
async def test_history_replays(name: str, data_converter: DataConverter) -> None:
    replayer = Replayer(workflows=[TurnWorkflow], data_converter=data_converter)
    await replayer.replay_workflow(load(name))  # raises on any nondeterminism


# Variants of today's workflow, registered under the same name. Unsandboxed: the sandbox
# would re-import this test module (gateway, uvicorn, ...) for them, and it only guards
# against non-deterministic calls, not against a changed command sequence.


@workflow.defn(name="Turn", sandboxed=False)
class TurnWithANewTimer(TurnWorkflow):
    """An unguarded new command before the first model call: breaks every turn in flight."""

    @workflow.run
    async def run(self, inp: TurnInput) -> TurnOutcome:
        await workflow.sleep(timedelta(seconds=1))
        return await super().run(inp)


@workflow.defn(name="Turn", sandboxed=False)
class TurnWithAPatchedTimer(TurnWorkflow):
    """The same change behind `workflow.patched`: old histories take the old path."""

    @workflow.run
    async def run(self, inp: TurnInput) -> TurnOutcome:
        if workflow.patched("replay-test-timer"):
            await workflow.sleep(timedelta(seconds=1))
        return await super().run(inp)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_an_unpatched_change_fails_replay(name: str, data_converter: DataConverter) -> None:
    replayer = Replayer(workflows=[TurnWithANewTimer], data_converter=data_converter)
    with pytest.raises(workflow.NondeterminismError):
        await replayer.replay_workflow(load(name))


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_a_patched_change_replays(name: str, data_converter: DataConverter) -> None:
    replayer = Replayer(workflows=[TurnWithAPatchedTimer], data_converter=data_converter)
    await replayer.replay_workflow(load(name))
