"""Turns that go wrong end cleanly: a bug in the workflow fails the turn instead of wedging
the session, and a reply cut off at the output limit says so."""

from __future__ import annotations

import uuid

from temporalio import workflow
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

# The sandbox re-imports this module to validate BrokenTurn: the rest passes through.
with workflow.unsafe.imports_passed_through():
    import pytest

    from parley.settings import Settings
    from parley.stack.fake_anthropic import FakeAnthropic, Reply, ToolCall
    from parley.turn.types import ToolCall as TurnToolCall
    from parley.turn.types import TurnInput, TurnOutcome
    from tests.helpers import (
        WsClient,
        collapse,
        kinds,
        run_turn,
        running_gateway,
        tokens,
    )
    from worker import model_clients, turn_activities
    from workflows.turn import TRUNCATED_NOTICE, TurnWorkflow

pytestmark = pytest.mark.usefixtures("worker")


@workflow.defn(name="Turn")
class BrokenTurn(TurnWorkflow):
    """The real workflow with a deliberate bug on the tool-call path."""

    @workflow.run
    async def run(self, inp: TurnInput) -> TurnOutcome:
        return await super().run(inp)

    def _publish_call(self, call: TurnToolCall) -> None:
        raise KeyError(f"deliberate bug publishing {call.name}")


async def test_a_workflow_bug_fails_the_turn_and_frees_the_session(
    isolated_settings: Settings, fake_model: FakeAnthropic, temporal_env: WorkflowEnvironment
) -> None:
    llm = model_clients(isolated_settings)
    async with running_gateway(isolated_settings) as gateway:
        worker = Worker(
            temporal_env.client,
            task_queue=isolated_settings.task_queue,
            workflows=[BrokenTurn],
            activities=turn_activities(gateway.services.pool, isolated_settings, llm),
        )
        async with worker, await WsClient.open(gateway.ws_url) as client:
            session = await client.create_session(str(uuid.uuid4()))
            call = ToolCall("order_status", {"order_id": "A1"})
            fake_model.enqueue(Reply(text="Let me check.", tool_calls=[call]))
            broken = await run_turn(client, session["sessionId"], "where is A1?", "bug")
            fake_model.enqueue(Reply(text="Hello again."))
            after = await run_turn(client, session["sessionId"], "hello?", "next")
    await llm.aclose()
    assert collapse(kinds(broken)) == ["immediate:202", "stream_token", "error"]
    assert broken[-1]["error"]["code"] == "AGENT_ERROR"
    assert "deliberate" not in broken[-1]["error"]["message"]  # no internals on the wire
    assert kinds(after)[0] == "immediate:202" and kinds(after)[-1] == "eventual_response"
    assert tokens(after) == "Hello again."


async def test_a_reply_cut_at_the_output_limit_says_so(
    client: WsClient, fake_model: FakeAnthropic
) -> None:
    session = await client.create_session(str(uuid.uuid4()))
    fake_model.enqueue(Reply(text="The three steps are: one, two", stop_reason="max_tokens"))
    events = await run_turn(client, session["sessionId"], "steps?", "cut")
    expected = "The three steps are: one, two" + TRUNCATED_NOTICE
    assert tokens(events) == expected
    final = events[-1]
    assert final["type"] == "eventual_response"
    assert final["data"]["data"]["response"]["responseParts"] == [expected]
    reply = await client.request(
        {"action": "get_conversation_messages", "requestId": "h", "sessionId": session["sessionId"]}
    )
    assert reply["data"]["messages"][0]["content"]["text"] == expected


async def test_a_tool_call_cut_at_the_output_limit_is_not_run(
    client: WsClient, fake_model: FakeAnthropic
) -> None:
    session = await client.create_session(str(uuid.uuid4()))
    fake_model.enqueue(
        Reply(
            text="Checking",
            tool_calls=[ToolCall("order_status", {"order_id": "A"})],
            stop_reason="max_tokens",
        )
    )
    events = await run_turn(client, session["sessionId"], "where?", "cuttool")
    assert collapse(kinds(events)) == ["immediate:202", "stream_token", "eventual_response"]
    assert tokens(events) == "Checking" + TRUNCATED_NOTICE
    assert len(fake_model.requests) == 1


async def test_a_terminated_turn_still_ends_with_one_terminal_event(
    client: WsClient, fake_model: FakeAnthropic, temporal_env: WorkflowEnvironment
) -> None:
    """An operator terminates a streaming turn: the workflow closes without publishing an
    end, and the relay says so (one AGENT_ERROR with a reference); the session is free."""
    from parley.turn.types import turn_id

    session = (await client.create_session(str(uuid.uuid4())))["sessionId"]
    fake_model.enqueue(Reply(text="this will be cut off", pause_after=2))
    await client.send(
        {"action": "send_message", "requestId": "t", "sessionId": session, "message": "hi"}
    )
    await fake_model.await_paused()
    await temporal_env.client.get_workflow_handle(turn_id(session, "t")).terminate("operator")
    fake_model.release()
    events = await client.recv_until(lambda e: e["type"] in ("error", "eventual_response"), 30)
    assert kinds(events)[-1] == "error" and events[-1]["requestId"] == "t"
    assert events[-1]["error"]["code"] == "AGENT_ERROR"
    assert "(ref " in events[-1]["error"]["message"]
    fake_model.enqueue(Reply(text="Back again."))
    after = await run_turn(client, session, "hello?", "t2")
    assert kinds(after)[-1] == "eventual_response" and tokens(after) == "Back again."


async def test_a_data_error_ends_the_turn_at_once(
    client: WsClient, fake_model: FakeAnthropic, caplog: pytest.LogCaptureFixture
) -> None:
    """A tool result PostgreSQL cannot store (a NUL): the turn ends with one terminal event
    at once (a data error is not retried), and the session is free."""
    session = (await client.create_session(str(uuid.uuid4())))["sessionId"]
    fake_model.enqueue(
        Reply(tool_calls=[ToolCall("raw_bytes_report", {})]), Reply(text="Report read.")
    )
    events = await run_turn(client, session, "report please", "nul", timeout=30)
    terminal = [e for e in events if e["type"] in ("error", "eventual_response", "cancelled")]
    assert terminal == [events[-1]] and events[-1]["error"]["code"] == "AGENT_ERROR"
    failed_attempts = [
        r
        for r in caplog.records
        if "activity as failed" in r.getMessage() and "run_tool" in r.getMessage()
    ]
    assert len(failed_attempts) == 1  # not retried
    fake_model.reset()
    fake_model.enqueue(Reply(text="Fine now."))
    after = await run_turn(client, session, "hello?", "nul2")
    assert tokens(after) == "Fine now."
