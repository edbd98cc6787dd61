"""Approval latency: how fast a parked write reaches the person, and their verdict the turn.

Run by hand from the project root (it is not a test):

    .venv/bin/python bench/approval_latency.py [--parked 1,20] [--rounds 5]

It brings up real parts: PostgreSQL (DATABASE_URL's server, else an embedded one; a fresh
database either way), the Temporal dev server, the Anthropic-format test server, and
Parley's worker and gateway as separate processes (with the demo's `issue_refund` write
tool). Each round parks N sessions at once on a refund, then confirms all N at once, and
measures per session:

  park -> ask     from the approval row's creation (the workflow recording the park) to
                  `write_confirmation_required` arriving at the client
  confirm -> go   from sending `confirm_tool_action` to the first event of the resumed turn
                  (the toolResult chunk; the ack before it is not counted)
  confirm -> ack  from sending the confirm to its `immediate_response` 200
"""

# ruff: noqa: E402  (the project root goes on sys.path before the project's imports)

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass, field

import psycopg
from temporalio.testing import WorkflowEnvironment
from websockets.asyncio.client import ClientConnection, connect

from bench.latency_stack import BENCH_LIMITS
from parley.stack import databases
from parley.stack.embedded import temporal_binary
from parley.stack.fake_anthropic import FakeAnthropic, Reply, ToolCall
from parley.stack.processes import ChildProcess, free_port, http_ok, wait_until
from parley.storage import db


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def model_reply(body: dict) -> Reply:
    """A refund first; once the tool's result is in the conversation, a short answer."""
    last = body["messages"][-1]["content"]
    if isinstance(last, list) and any(b.get("type") == "tool_result" for b in last):
        return Reply(text="Your refund is on its way.")
    return Reply(tool_calls=[ToolCall("issue_refund", {"order_id": f"ORD-{uuid.uuid4().hex[:6]}"})])


@dataclass
class Samples:
    park_to_ask: list[float] = field(default_factory=list)
    confirm_to_resume: list[float] = field(default_factory=list)
    confirm_to_ack: list[float] = field(default_factory=list)


class Session:
    """One browser: a socket, a session, one parked turn at a time."""

    def __init__(self, ws: ClientConnection, session_id: str) -> None:
        self.ws = ws
        self.session_id = session_id

    @classmethod
    async def open(cls, url: str) -> Session:
        ws = await connect(url, max_size=None)
        await ws.send(json.dumps({"action": "create_conversation_session", "agentId": "bench"}))
        reply = json.loads(await ws.recv())
        return cls(ws, reply["data"]["sessionId"])

    async def until(self, predicate) -> tuple[dict, float]:
        while True:
            event = json.loads(await asyncio.wait_for(self.ws.recv(), 60))
            if predicate(event):
                return event, time.time()

    async def park(self, request_id: str) -> float:
        """Start a turn; returns when `write_confirmation_required` arrived (wall clock)."""
        await self.ws.send(
            json.dumps(
                {
                    "action": "send_message",
                    "requestId": request_id,
                    "sessionId": self.session_id,
                    "message": "Please refund my order.",
                }
            )
        )
        _, at = await self.until(lambda e: e["type"] == "write_confirmation_required")
        await self.until(lambda e: e["type"] == "stream_chunk")  # the toolCall chunk
        return at

    async def confirm(self, request_id: str) -> tuple[float, float]:
        """Approve; returns (ack latency, latency to the first resumed event)."""
        sent = time.time()
        await self.ws.send(
            json.dumps(
                {
                    "action": "confirm_tool_action",
                    "requestId": f"c-{request_id}",
                    "sessionId": self.session_id,
                    "approved": True,
                }
            )
        )
        ack, ack_at = await self.until(lambda e: e.get("requestId") == f"c-{request_id}")
        assert ack["type"] == "immediate_response", ack
        _, resumed_at = await self.until(lambda e: e.get("requestId") == request_id)
        await self.until(
            lambda e: e["type"] == "eventual_response" and e.get("requestId") == request_id
        )
        return ack_at - sent, resumed_at - sent


async def parked_at(database_url: str, session_ids: list[str]) -> dict[str, float]:
    """When each session's newest approval was recorded (epoch seconds, DB clock)."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "select distinct on (session_id) session_id::text,"
            " extract(epoch from created_at)::float8 from approvals"
            " where session_id = any(%s::uuid[]) order by session_id, created_at desc",
            (session_ids,),
        )
        return dict(await cur.fetchall())


async def run_level(ws_url: str, database_url: str, parked: int, rounds: int) -> Samples:
    samples = Samples()
    sessions = await asyncio.gather(*(Session.open(ws_url) for _ in range(parked)))
    try:
        for round_ in range(rounds + 1):  # the first round warms up
            rid = f"r{round_}"
            asked = await asyncio.gather(*(s.park(rid) for s in sessions))
            recorded = await parked_at(database_url, [s.session_id for s in sessions])
            results = await asyncio.gather(*(s.confirm(rid) for s in sessions))
            if round_ == 0:
                continue
            for s, ask_at in zip(sessions, asked, strict=True):
                samples.park_to_ask.append(ask_at - recorded[s.session_id])
            for ack, resumed in results:
                samples.confirm_to_ack.append(ack)
                samples.confirm_to_resume.append(resumed)
            say(f"  {parked} parked: round {round_}/{rounds} done")
    finally:
        for s in sessions:
            await s.ws.close()
    return samples


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


async def measure(args: argparse.Namespace, log_dir: Path) -> dict[int, Samples]:
    """Bring everything up, measure each level, and tear it all down again."""
    levels = [int(n) for n in args.parked.split(",")]
    with (
        databases.database_server() as server,
        databases.fresh_database(server, "parley_bench") as database_url,
        FakeAnthropic() as fake,
    ):
        await db.migrate(database_url)
        fake.default_reply = model_reply
        temporal = await WorkflowEnvironment.start_local(dev_server_existing_path=temporal_binary())
        port = free_port()
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": database_url,
            "TEMPORAL_ADDRESS": temporal.client.service_client.config.target_host,
            "PARLEY_TASK_QUEUE": "bench-approvals",
            "PARLEY_PORT": str(port),
            "ANTHROPIC_API_KEY": "bench",
            "ANTHROPIC_BASE_URL": fake.base_url,
            "PARLEY_TOOL_MODULES": "parley.demo",
            "PARLEY_GROUNDING_RESULTS": "0",
            "PARLEY_LOG_LEVEL": "WARNING",
            "PARLEY_WIDGET_AUTH_STRICT": "false",
            **BENCH_LIMITS,
        }
        roles = {"worker": ["-m", "worker"], "gateway": ["-m", "parley", "gateway"]}
        children = [
            ChildProcess(
                name, [sys.executable, *args], env=env, cwd=ROOT, log_path=log_dir / f"{name}.log"
            )
            for name, args in roles.items()
        ]
        try:
            await wait_until(
                http_ok(f"http://127.0.0.1:{port}/readyz"), children, timeout=90, what="the gateway"
            )
            results = {}
            for parked in levels:
                say(f"Measuring with {parked} parked session(s) ...")
                results[parked] = await run_level(
                    f"ws://127.0.0.1:{port}/ws", database_url, parked, args.rounds
                )
            return results
        finally:
            for child in children:
                child.stop(timeout=15)
            await temporal.shutdown()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parked", default="1,20", help="parked sessions per level")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds per level")
    args = parser.parse_args()
    log_dir = Path(tempfile.mkdtemp(prefix="parley-bench-logs-"))
    say("Starting PostgreSQL, Temporal and the model server ...")
    results = await measure(args, log_dir)
    print(f"\nApproval latency (ms), {args.rounds} measured rounds per level, logs in {log_dir}")
    print(f"{'parked':>7} {'metric':<16} {'n':>4} {'p50':>8} {'p95':>8} {'mean':>8}")
    for parked, s in results.items():
        for name, values in (
            ("park -> ask", s.park_to_ask),
            ("confirm -> ack", s.confirm_to_ack),
            ("confirm -> go", s.confirm_to_resume),
        ):
            mean = statistics.fmean(values) * 1000
            print(
                f"{parked:>7} {name:<16} {len(values):>4} {pct(values, 0.5):>8.1f}"
                f" {pct(values, 0.95):>8.1f} {mean:>8.1f}"
            )


if __name__ == "__main__":
    asyncio.run(main())
