"""Turn latency, the clients: one driver per system measured, and the phase that runs them.

A driver is how one bench session talks to its system (Parley over the WebSocket protocol,
the relay floor through Workflow Streams, the live-lane floor through LISTEN/NOTIFY, the
fake model through the bare SDK) and records each turn as a `Sample`: when it was asked
for, and when each stamped delta arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import anthropic
import httpx
from temporalio.client import Client
from temporalio.contrib.workflow_streams import WorkflowStreamClient
from websockets.asyncio.client import ClientConnection, connect

from bench import live_floor
from bench.cpu import CpuMeter
from bench.latency_stack import BenchError, say
from bench.live_floor import LiveFloorListener
from bench.relay_floor import FloorInput
from bench.temporal_counts import TurnHistory
from parley.stack.fake_anthropic import parse_stamps
from parley.turn.events import EVENTS_TOPIC, TURN_EVENT, Done, Token, is_terminal
from parley.turn.types import turn_id

MODEL = "claude-haiku-4-5"
AGENT = "bench-agent"


@dataclass
class Sample:
    """One turn as a client saw it."""

    t0: float  # wall clock when the turn was requested
    received: list[tuple[float, str]] = field(default_factory=list)  # (wall clock, token)
    final_text: str | None = None  # the terminal event's text, where there is one
    resets: int = 0
    error: str | None = None
    workflow_id: str | None = None
    marks: dict[str, float] = field(default_factory=dict)  # client-side moments, wall clock


@dataclass
class PhaseResult:
    phase: str
    sessions: int
    turns_per_session: int
    deltas_per_turn: int
    samples: list[Sample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    window: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    lanes: dict[str, int] = field(default_factory=dict)  # Parley: items relayed, by lane
    histories: list[TurnHistory] = field(default_factory=list)  # a sample of its turns

    @property
    def ok(self) -> list[Sample]:
        return [s for s in self.samples if s.error is None]

    @property
    def turns(self) -> int:
        return len(self.ok)

    @property
    def ttft(self) -> list[float]:
        return [s.received[0][0] - s.t0 for s in self.ok if s.received]

    @property
    def delta_latency(self) -> list[float]:
        return [now - stamp for s in self.ok for now, tok in s.received for stamp in stamps(tok)]

    def integrity(self) -> tuple[int, int, int, int]:
        """(expected deltas, lost, duplicated, out of place) over the good turns.

        The expected deltas of a turn are the stamps in its final text (Parley: the reply
        the model activity assembled from the whole model stream; floor: what the activity
        published), so the check does not rely on stamps being unique.
        """
        expected = lost = dup = misplaced = 0
        for s in self.ok:
            if s.final_text is None:
                continue  # the bare SDK: nothing to check against
            want = stamps(s.final_text)
            got = [stamp for _, tok in s.received for stamp in stamps(tok)]
            expected += self.deltas_per_turn
            missing, extra = Counter(want) - Counter(got), Counter(got) - Counter(want)
            lost += sum(missing.values()) + max(0, self.deltas_per_turn - len(want))
            dup += sum(extra.values())
            if not missing and not extra:
                misplaced += sum(1 for a, b in zip(got, want, strict=True) if a != b)
        return expected, lost, dup, misplaced

    def cpu_sum(self, names: Iterable[str]) -> float:
        return sum(self.cpu.get(n, 0.0) for n in names)


def stamps(token: str) -> list[float]:
    return parse_stamps(token)


class Driver:
    """How one kind of session talks to its system; `turn` never raises."""

    phase = ""

    async def open(self, index: int) -> Any:
        return None

    async def turn(self, state: Any, n: int) -> Sample:
        raise NotImplementedError

    async def close(self, state: Any) -> None:
        return None

    async def lane_counts(self) -> dict[str, int]:
        """Counters the system keeps of how it delivered items (Parley's gateway only)."""
        return {}


@dataclass
class ParleyDriver(Driver):
    """A WebSocket client of the gateway: one connection and one session per bench session."""

    ws_url: str
    counts_url: str  # the bench gateway's GET /bench/feed-counts
    timeout: float
    compression: bool
    phase: str = "parley"  # or "parley-off": two pairs, one driver each

    async def lane_counts(self) -> dict[str, int]:
        async with httpx.AsyncClient(timeout=10) as http:
            reply = await http.get(self.counts_url)
            reply.raise_for_status()
            counts: dict[str, int] = reply.json()
            return counts

    async def open(self, index: int) -> tuple[ClientConnection, str]:
        ws = await connect(
            self.ws_url,
            max_size=None,
            open_timeout=self.timeout,
            compression="deflate" if self.compression else None,
        )
        try:
            await ws.send(
                json.dumps(
                    {
                        "action": "create_conversation_session",
                        "requestId": "cs",
                        "agentId": AGENT,
                        "userName": f"bench user {index}",
                    }
                )
            )
            async with asyncio.timeout(self.timeout):
                reply = json.loads(await ws.recv())
            if reply.get("type") != "immediate_response":
                raise BenchError(f"create_conversation_session failed: {reply}")
            return ws, reply["data"]["sessionId"]
        except BaseException:
            await ws.close()
            raise

    async def turn(self, state: tuple[ClientConnection, str], n: int) -> Sample:
        ws, session_id = state
        request_id = f"b{n}-{uuid.uuid4().hex[:8]}"
        frame = json.dumps(
            {
                "action": "send_message",
                "requestId": request_id,
                "sessionId": session_id,
                "message": f"Benchmark turn {n}: please answer.",
            }
        )
        sample = Sample(t0=time.time(), workflow_id=turn_id(session_id, request_id))
        received = sample.received
        try:
            await ws.send(frame)
            async with asyncio.timeout(self.timeout):
                while True:
                    raw = await ws.recv()
                    now = time.time()
                    event = json.loads(raw)
                    kind = event.get("type")
                    if event.get("requestId") != request_id:
                        continue
                    if kind == "stream_token":
                        received.append((now, event["token"]))
                    elif kind == "immediate_response":
                        sample.marks["client: 202 received"] = now
                    elif kind == "eventual_response":
                        parts = event["data"]["data"]["response"]["responseParts"]
                        sample.final_text = "".join(parts)
                        return sample
                    elif kind == "error":
                        sample.error = f"{event['error']['code']}: {event['error']['message']}"
                        return sample
                    elif kind == "cancelled":
                        sample.error = "cancelled"
                        return sample
                    elif kind == "stream_chunk" and event.get("node") == "stream_reset":
                        sample.resets += 1
        except TimeoutError:
            sample.error = f"timed out after {self.timeout:g}s ({len(received)} tokens)"
        except Exception as err:
            sample.error = f"{type(err).__name__}: {err}"
        return sample

    async def close(self, state: tuple[ClientConnection, str]) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(state[0].close(), 5)


@dataclass
class FloorDriver(Driver):
    """Starts a RelayFloor workflow per turn and subscribes to its stream, like a gateway."""

    client: Client
    task_queue: str
    inp: FloorInput
    poll_cooldown: timedelta
    timeout: float
    phase = "relay-floor"

    async def turn(self, state: Any, n: int) -> Sample:
        workflow_id = f"relay-floor-{uuid.uuid4().hex[:12]}"
        sample = Sample(t0=time.time(), workflow_id=workflow_id)
        try:
            async with asyncio.timeout(self.timeout):
                await self.client.start_workflow(
                    "RelayFloor", self.inp, id=workflow_id, task_queue=self.task_queue
                )
                sample.marks["client: workflow started"] = time.time()
                stream = WorkflowStreamClient.create(self.client, workflow_id)
                items = stream.subscribe(
                    [EVENTS_TOPIC], result_type=TURN_EVENT, poll_cooldown=self.poll_cooldown
                )
                async with contextlib.aclosing(items):
                    async for item in items:
                        now = time.time()
                        event = item.data
                        if isinstance(event, Token):
                            sample.received.append((now, event.text))
                        elif is_terminal(event):
                            sample.final_text = event.text if isinstance(event, Done) else None
                            return sample
            sample.error = "stream ended without a terminal item"
        except TimeoutError:
            sample.error = f"timed out after {self.timeout:g}s ({len(sample.received)} items)"
        except Exception as err:
            sample.error = f"{type(err).__name__}: {err}"
        return sample


@dataclass
class LiveFloorDriver(Driver):
    """Asks the live-lane floor's sender for a turn and reads its deltas off the channel."""

    listener: LiveFloorListener
    timeout: float
    phase = "live-floor"

    async def turn(self, state: Any, n: int) -> Sample:
        turn = uuid.uuid4().hex
        items = self.listener.open(turn)
        sample = Sample(t0=time.time())
        try:
            async with asyncio.timeout(self.timeout):
                await self.listener.request(turn)
                while True:
                    now, seq, text = await items.get()
                    if seq == live_floor.END:
                        sample.final_text = text
                        return sample
                    sample.received.append((now, text))
        except TimeoutError:
            sample.error = f"timed out after {self.timeout:g}s ({len(sample.received)} items)"
        except Exception as err:
            sample.error = f"{type(err).__name__}: {err}"
        finally:
            self.listener.close(turn)
        return sample


@dataclass
class SdkDriver(Driver):
    """The fake model through the bare anthropic SDK (one shared client, as the worker has)."""

    client: anthropic.AsyncAnthropic
    timeout: float
    phase = "sdk"

    async def turn(self, state: Any, n: int) -> Sample:
        sample = Sample(t0=time.time())
        try:
            async with (
                asyncio.timeout(self.timeout),
                self.client.messages.stream(
                    model=MODEL,
                    max_tokens=1024,
                    messages=[{"role": "user", "content": f"Benchmark turn {n}: please answer."}],
                ) as stream,
            ):
                async for event in stream:
                    if event.type == "text":
                        sample.received.append((time.time(), event.text))
        except TimeoutError:
            sample.error = f"timed out after {self.timeout:g}s"
        except Exception as err:
            sample.error = f"{type(err).__name__}: {err}"
        return sample


async def run_phase(
    driver: Driver,
    sessions: int,
    warmup: int,
    turns: int,
    deltas: int,
    meter: CpuMeter,
    label: str,
    think: float = 0.0,
) -> PhaseResult:
    """`sessions` concurrent sessions: `warmup` turns each, then (all warm) `turns` each,
    each session pausing `think` seconds between its turns (a user reading the reply).

    The measured window (its CPU, and the lane counts of a system that keeps them) runs
    from the moment every session is warm to the moment the last one finished its measured
    turns.
    """
    result = PhaseResult(driver.phase, sessions, turns, deltas)
    warmed = 0
    all_warm, go = asyncio.Event(), asyncio.Event()
    done_turns = 0

    async def session(index: int) -> None:
        nonlocal warmed, done_turns
        state: Any = None
        try:
            try:
                state = await driver.open(index)
                for n in range(warmup):
                    if n:
                        await asyncio.sleep(think)
                    sample = await driver.turn(state, -1 - n)
                    if sample.error:
                        raise BenchError(f"warm-up turn failed: {sample.error}")
            except Exception as err:
                result.errors.append(f"session {index}: {err}")
                return
            finally:
                warmed += 1
                if warmed == sessions:
                    all_warm.set()
            await go.wait()
            for n in range(turns):
                if n:
                    await asyncio.sleep(think)
                sample = await driver.turn(state, n)
                result.samples.append(sample)
                done_turns += 1
                if sample.error:
                    result.errors.append(f"session {index} turn {n}: {sample.error}")
                    break
        finally:
            if state is not None:
                await driver.close(state)

    async def report() -> None:
        started = time.monotonic()
        while True:
            await asyncio.sleep(5)
            if go.is_set():
                state = f"measured {done_turns}/{sessions * turns} turns"
            else:
                state = f"warming up ({warmed}/{sessions} sessions warm)"
            say(f"    [{label}] {state}, {time.monotonic() - started:.0f}s")

    tasks = [asyncio.create_task(session(i)) for i in range(sessions)]
    reporter = asyncio.create_task(report())
    try:
        await all_warm.wait()
        lanes = await driver.lane_counts()
        before = meter.snapshot()
        began = time.monotonic()
        go.set()
        await asyncio.gather(*tasks)
        result.window = time.monotonic() - began
        result.cpu = meter.delta(before, meter.snapshot())
        after = await driver.lane_counts()
        result.lanes = {k: after[k] - lanes.get(k, 0) for k in ("live", "durable") if k in after}
    finally:
        reporter.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(reporter, *tasks, return_exceptions=True)
    return result
