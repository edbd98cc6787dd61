"""The live lane at scale: many viewers, long turns, and the lane switched off.

A turn's workflow history is bounded by Temporal's per-run limits (2,000 updates, 10 updates
in flight, 10,000 signals, ~51,200 events). The live lane exists so that a turn's cost in
history grows with its length in coarse batches, never with its tokens or its viewers: the
model activity signals one batch per `relay_batch_interval`, and each gateway keeps one
durable subscription (one long-poll update per batch) per turn, however many of its sockets
watch it. These tests watch real turns through real gateways and count the real history;
the last one watches a turn past the point where long-polls alone would exhaust a run.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from parley.settings import Settings
from parley.stack.fake_anthropic import FakeAnthropic, Reply, ToolCall
from parley.turn.record import PARAGRAPH
from parley.turn.types import turn_id
from tests.conftest import Processes
from tests.helpers import (
    Event,
    GatewayServer,
    WsClient,
    collapse,
    is_terminal,
    kinds,
    run_turn,
    running_gateway,
    running_worker,
    tokens,
)

# Temporal's per-run limits (default dynamic config of the server and of Temporal Cloud).
MAX_UPDATES = 2_000
MAX_SIGNALS = 10_000
MAX_EVENTS = 51_200


def numbered_text(chars: int, tag: str) -> str:
    """Text whose every word is numbered, so a lost, repeated or reordered delta shows."""
    words = (f"{tag}{i:05d} " for i in range(chars // (len(tag) + 6) + 1))
    return "".join(words)[:chars]


def chunks(text: str, size: int) -> list[str]:
    """The deltas the fake model streams for `text` (one `stream_token` each)."""
    return [text[i : i + size] for i in range(0, len(text), size)]


def reply_deltas(texts: list[str], size: int) -> list[str]:
    """The deltas of a turn whose model calls said `texts`: each call's text after the
    first opens a new paragraph (PARAGRAPH leads its first delta)."""
    out: list[str] = []
    for k, text in enumerate(texts):
        pieces = chunks(text, size)
        if k and pieces:
            pieces[0] = PARAGRAPH + pieces[0]
        out += pieces
    return out


def token_list(events: list[Event]) -> list[str]:
    return [e["token"] for e in events if e["type"] == "stream_token"]


@dataclass(frozen=True)
class HistoryCounts:
    events: int
    signals: int
    updates: int  # accepted (a rejected update leaves nothing in history)
    activities: int  # scheduled


async def history_counts(client: Client, workflow_id: str) -> HistoryCounts:
    """The turn's history once its run has closed (after the linger), counted by kind."""
    handle = client.get_workflow_handle(workflow_id)
    async with asyncio.timeout(60):
        await handle.result()
    history = await handle.fetch_history()
    counted = Counter(e.event_type for e in history.events)
    return HistoryCounts(
        events=len(history.events),
        signals=counted[EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED],
        updates=counted[EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED],
        activities=counted[EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED],
    )


def max_events(counts: HistoryCounts) -> int:
    """The most events a run with these signals, updates and activities may hold: a signal
    is one event, an update two (accepted, completed), an activity three; each of them (and
    the start and the linger timer) may wake the workflow for a task of its own, three
    events more (counted twice for an activity, with room to spare); a few at the ends."""
    tasks = counts.signals + counts.updates + 2 * counts.activities + 5
    return 3 * tasks + counts.signals + 2 * counts.updates + 3 * counts.activities + 5


class Viewer:
    """One socket watching a turn: collects what it receives up to the terminal event, and
    lets the test wait until it has seen a number of tokens."""

    def __init__(self, client: WsClient, request_id: str, idle_timeout: float = 60) -> None:
        self.client = client
        self.events: list[Event] = []
        self._request_id = request_id
        self._idle_timeout = idle_timeout
        self._tokens = 0
        self._progress = asyncio.Condition()
        self.task = asyncio.create_task(self._collect())

    async def _collect(self) -> list[Event]:
        done = is_terminal(self._request_id)
        while True:
            event = await self.client.recv(self._idle_timeout)
            self.events.append(event)
            if event["type"] == "stream_token":
                self._tokens += 1
            async with self._progress:
                self._progress.notify_all()
            if done(event):
                return self.events

    async def seen_tokens(self, n: int, timeout: float = 30) -> None:
        """Wait until `n` tokens arrived (fails early if the socket stopped reading)."""
        async with asyncio.timeout(timeout), self._progress:
            await self._progress.wait_for(lambda: self._tokens >= n or self.task.done())
        if self.task.done():
            self.task.result()
        assert self._tokens >= n, f"{self._tokens} of {n} tokens before the end"


@pytest.mark.timeout(180)
async def test_twenty_sockets_on_two_gateways_watch_a_minute_long_turn(
    isolated_settings: Settings,
    processes: Processes,
    fake_model: FakeAnthropic,
    temporal_env: WorkflowEnvironment,
) -> None:
    """Every socket gets every delta once and in order, and the turn's history stays bounded
    by its length in batches: 20 viewers and 1,500 deltas cost what 2 gateways do."""
    settings = isolated_settings
    chunk_chars, delay = 4, 0.04
    text = numbered_text(6_000, "w")
    deltas = chunks(text, chunk_chars)  # 1,500 deltas x 40 ms: a minute of streaming
    fake_model.enqueue(Reply(text=text, chunk_chars=chunk_chars, delay=delay))
    processes.worker(settings)
    (_, port_a), (_, port_b) = await asyncio.gather(
        processes.gateway(settings), processes.gateway(settings)
    )
    urls = [f"ws://127.0.0.1:{port}/ws" for port in (port_a, port_b)]
    rid = "long"
    loop = asyncio.get_running_loop()
    async with AsyncExitStack() as stack:
        sockets = [
            await stack.enter_async_context(await WsClient.open(urls[i % 2])) for i in range(20)
        ]
        session = await sockets[0].create_session(str(uuid.uuid4()))
        sid = session["sessionId"]
        started = loop.time()
        await sockets[0].send(
            {"action": "send_message", "requestId": rid, "sessionId": sid, "message": "go"}
        )
        viewers = [Viewer(sockets[0], rid)]

        async def attach(wave: list[WsClient]) -> None:
            for client in wave:
                await client.send({"action": "resume_turn", "requestId": rid, "sessionId": sid})
                viewers.append(Viewer(client, rid))

        # Gateway A's other 9 sockets as the turn starts (they share the feed socket 0
        # started); gateway B's 10 halfway through: its feed starts then, so the replay of a
        # long durable backlog and the live tail meet in one merge.
        await viewers[0].seen_tokens(1, timeout=60)  # the worker process may still be starting
        await attach(sockets[2::2])
        await viewers[0].seen_tokens(len(deltas) // 2, timeout=90)
        await attach(sockets[1::2])
        async with asyncio.timeout(90):
            results = await asyncio.gather(*(v.task for v in viewers))
        duration = loop.time() - started

    for n, events in zip((0, *range(2, 20, 2), *range(1, 20, 2)), results, strict=True):
        assert token_list(events) == deltas, f"socket {n}: deltas lost, repeated or reordered"
        assert tokens(events) == text
        assert all(e.get("requestId") == rid for e in events), f"socket {n}"
        final = events[-1]
        assert final["type"] == "eventual_response", f"socket {n}: {final}"
        assert final["data"]["data"]["response"]["responseParts"] == [text]
        expected = ["stream_token", "eventual_response"]
        assert collapse(kinds(events)) == (["immediate:202", *expected] if n == 0 else expected)
    assert duration > len(deltas) * delay  # it really streamed for a minute

    counts = await history_counts(temporal_env.client, turn_id(sid, rid))
    # Signals: the model activity sends one per batch interval while it streams, plus one
    # as it ends (the first item waits for the batch too: it went live). So at most
    # duration / interval + 2, whatever the number of deltas (1,500) or sockets (20).
    interval = settings.relay_batch_interval.total_seconds()
    max_signals = math.ceil(duration / interval) + 2
    assert 0 < counts.signals <= max_signals, (counts, duration)
    # Updates: each gateway's one subscription long-polls; a poll returns when the record
    # grew (a signal, or the terminal item the workflow publishes) and is then renewed. So
    # signals + 1 per gateway (and a few more if a poll is retried): 2 gateways, not 20
    # sockets, and not 1,500 deltas.
    gateways = 2
    assert gateways <= counts.updates <= gateways * (counts.signals + 1 + 3), counts
    assert counts.events <= max_events(counts), counts
    # And far below every per-run limit. Updates come closest: one per batch per watching
    # gateway, ~2 a second each (here ~250 of 2,000 for a minute on 2 gateways).
    assert counts.signals < MAX_SIGNALS // 50
    assert counts.updates < MAX_UPDATES // 6
    assert counts.events < MAX_EVENTS // 25


async def test_twenty_tool_iterations_with_long_replies(
    isolated_settings: Settings, fake_model: FakeAnthropic, temporal_env: WorkflowEnvironment
) -> None:
    """A turn of 21 model calls and 20 tool calls, 4,200 deltas in all, arrives whole, and its
    history is a small fraction of every per-run limit (batches, not deltas)."""
    settings = isolated_settings.model_copy(update={"max_iterations": 21})
    chunk_chars = 2
    texts = [numbered_text(400, f"i{i:02d}-") for i in range(21)]
    replies = [
        Reply(
            text=texts[i],
            chunk_chars=chunk_chars,
            tool_calls=[ToolCall("order_status", {"order_id": f"ORD-{i}"})],
        )
        for i in range(20)
    ]
    fake_model.enqueue(*replies, Reply(text=texts[20], chunk_chars=chunk_chars))
    full = PARAGRAPH.join(texts)
    rid = "iter"
    async with (
        running_worker(settings),
        running_gateway(settings) as gateway,
        await WsClient.open(gateway.ws_url) as client,
    ):
        session = await client.create_session(str(uuid.uuid4()))
        events = await run_turn(client, session["sessionId"], "go", rid, timeout=90)
        feeds = gateway.services.feeds.counts
        # While the worker runs: the run closes after its linger, in a workflow task.
        tid = turn_id(session["sessionId"], rid)
        counts = await history_counts(temporal_env.client, tid)

    assert len(fake_model.requests) == 21
    assert fake_model.pending == 0
    assert collapse(kinds(events)) == [
        "immediate:202",
        *["stream_token", "chunk:toolCall", "chunk:toolResult"] * 20,
        "stream_token",
        "eventual_response",
    ]
    assert token_list(events) == reply_deltas(texts, chunk_chars)
    assert "".join(token_list(events)) == full  # what streamed is what was stored
    assert events[-1]["data"]["data"]["response"]["responseParts"] == [full]
    calls = [e for e in events if kinds([e]) == ["chunk:toolCall"]]
    assert [c["data"]["state"]["rawResponse"]["toolCall"]["arguments"] for c in calls] == [
        {"order_id": f"ORD-{i}"} for i in range(20)
    ]
    # Every item reached the one feed exactly once, from one lane or the other.
    assert feeds.live + feeds.durable == len(token_list(events)) + 2 * 20 + 1

    assert counts.activities == 21 + 20 + 1  # model calls, tool calls, finish_turn
    # Each model call signals once per batch interval while it streams, plus once at its
    # end; these calls stream in well under a batch interval each, so ~1-2 signals a call
    # (4,200 deltas would be 4,200 signals without batching).
    assert counts.signals <= 3 * 21, counts
    # One gateway's subscription: a poll per growth of the record (a signal, a tool call,
    # a tool result, the terminal item), never one per delta.
    assert 1 <= counts.updates <= counts.signals + 2 * 20 + 2, counts
    assert counts.events <= max_events(counts), counts
    assert counts.signals < MAX_SIGNALS // 100
    assert counts.updates < MAX_UPDATES // 10
    assert counts.events < MAX_EVENTS // 50


async def test_without_the_live_lane_the_durable_record_carries_every_item(
    isolated_settings: Settings, fake_model: FakeAnthropic
) -> None:
    """`live_lane=False`: no item is NOTIFYed or LISTENed for, and the relay alone, in short
    batches, still delivers tokens, tool chunks and the answer complete and in order."""
    settings = isolated_settings.model_copy(
        update={"live_lane": False, "relay_batch_interval": timedelta(milliseconds=30)}
    )
    first, last = numbered_text(240, "a"), numbered_text(240, "b")
    fake_model.enqueue(
        Reply(
            text=first,
            delay=0.005,
            tool_calls=[ToolCall("order_status", {"order_id": "ORD-9"})],
        ),
        Reply(text=last, delay=0.005),
    )
    async with (
        running_worker(settings),
        running_gateway(settings) as gateway,
        await WsClient.open(gateway.ws_url) as client,
    ):
        session = await client.create_session(str(uuid.uuid4()))
        events = await run_turn(client, session["sessionId"], "Where is ORD-9?", "off")
        feeds = gateway.services.feeds.counts

    assert collapse(kinds(events)) == [
        "immediate:202",
        "stream_token",
        "chunk:toolCall",
        "chunk:toolResult",
        "stream_token",
        "eventual_response",
    ]
    assert token_list(events) == reply_deltas([first, last], 4)
    assert events[-1]["data"]["data"]["response"]["responseParts"] == [first + PARAGRAPH + last]
    assert feeds.live == 0
    # Every item (tokens, tool call, tool result, the answer) came from the durable record.
    assert feeds.durable == len(token_list(events)) + 3


@pytest.mark.usefixtures("worker")
async def test_with_the_live_lane_tokens_come_live(
    gateway: GatewayServer, fake_model: FakeAnthropic
) -> None:
    """The converse, on the session's gateway and worker (live lane on): a streamed turn's
    tokens reach the feed from the live lane, ahead of the 500 ms durable batches."""
    text = numbered_text(200, "t")
    fake_model.enqueue(Reply(text=text, delay=0.01))
    feeds = gateway.services.feeds.counts
    live, durable = feeds.live, feeds.durable
    async with await WsClient.open(gateway.ws_url) as client:
        session = await client.create_session(str(uuid.uuid4()))
        events = await run_turn(client, session["sessionId"], "stream it", "on")
    assert token_list(events) == chunks(text, 4)
    assert events[-1]["type"] == "eventual_response"
    came_live, came_durable = feeds.live - live, feeds.durable - durable
    # Each item once, from whichever lane had it first: the answer only comes durable.
    assert came_live + came_durable == len(chunks(text, 4)) + 1
    # 50 deltas over half a second: the live lane has each a round trip after the model
    # wrote it, the record only at the next batch; at worst the first waits for its batch
    # and the rest, held meanwhile, follow it from the live lane.
    assert came_live >= len(chunks(text, 4)) // 2, (came_live, came_durable)


@pytest.mark.timeout(180)
async def test_a_turn_watched_past_the_update_budget_keeps_its_viewers(
    isolated_settings: Settings, fake_model: FakeAnthropic, temporal_env: WorkflowEnvironment
) -> None:
    """The run's 2,000 updates would be spent per gateway, one long-poll per batch each: here
    (the live lane off, 30 ms batches as its settings advise, 8 gateways polling ~15 times a
    second each) in about 17 s. Each gateway stops at its budget (PARLEY_RELAY_UPDATE_BUDGET,
    150) and reads by query, so the run stays under the limit and every viewer finishes."""
    settings = isolated_settings.model_copy(
        update={
            "live_lane": False,
            "relay_batch_interval": timedelta(milliseconds=30),
            "db_pool_max": 3,
        }
    )
    text = numbered_text(3_000, "u")
    deltas = chunks(text, 4)  # 750 deltas x 40 ms: 30 s, longer than the run's updates last
    fake_model.enqueue(Reply(text=text, delay=0.04))
    rid = "budget"
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(running_worker(settings))
        gateways = [await stack.enter_async_context(running_gateway(settings)) for _ in range(8)]
        sockets = [await stack.enter_async_context(await WsClient.open(g.ws_url)) for g in gateways]
        sid = (await sockets[0].create_session(str(uuid.uuid4())))["sessionId"]
        await sockets[0].send(
            {"action": "send_message", "requestId": rid, "sessionId": sid, "message": "go"}
        )
        viewers = [Viewer(sockets[0], rid)]
        await viewers[0].seen_tokens(1)
        for client in sockets[1:]:
            await client.send({"action": "resume_turn", "requestId": rid, "sessionId": sid})
            viewers.append(Viewer(client, rid))
        async with asyncio.timeout(120):
            results = await asyncio.gather(*(v.task for v in viewers))
        if any(events[-1]["type"] != "eventual_response" for events in results):
            # The feeds were lost, not the turn: end it (a cancel would wait on its workflow
            # tasks, which fail while updates over the limit are refused).
            handle = temporal_env.client.get_workflow_handle(turn_id(sid, rid))
            await handle.terminate("the test is over")
    for events in results:
        assert events[-1]["type"] == "eventual_response", events[-1]
        assert token_list(events) == deltas
    history = await temporal_env.client.get_workflow_handle(turn_id(sid, rid)).fetch_history()
    updates = sum(
        e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
        for e in history.events
    )
    assert updates <= 8 * settings.relay_update_budget < 2_000
