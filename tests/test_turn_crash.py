"""A worker process killed mid-stream: a new worker finishes the turn, the client is told
to drop the partial text, and the reply is persisted exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid

import pytest

from parley.settings import Settings
from parley.stack.fake_anthropic import FakeAnthropic, Reply
from tests.conftest import Processes
from tests.helpers import GatewayServer, WsClient, is_terminal, kinds


@pytest.mark.timeout(120)
async def test_worker_killed_mid_stream(
    isolated_settings: Settings, processes: Processes, fake_model: FakeAnthropic
):
    settings = isolated_settings
    full = "The quick brown fox jumps over the lazy dog, twice over."
    fake_model.enqueue(Reply(text=full, pause_after=4), Reply(text=full))
    gateway = GatewayServer(settings)
    await gateway.start()
    first = processes.worker(settings)
    try:
        async with await WsClient.open(gateway.ws_url) as client:
            session = await client.create_session(str(uuid.uuid4()))
            await client.send(
                {
                    "action": "send_message",
                    "requestId": "crash",
                    "sessionId": session["sessionId"],
                    "message": "Tell me about the fox.",
                }
            )
            accepted = await client.recv(timeout=30)
            assert accepted["status"] == 202
            before = await client.recv(timeout=30)  # partial text reached the client
            assert before["type"] == "stream_token"
            await fake_model.await_paused(timeout=30)
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            await fake_model.await_disconnected(timeout=10)
            processes.worker(settings)
            events = [before, *await client.recv_until(is_terminal("crash"), timeout=90)]
            history = await client.request(
                {
                    "action": "get_conversation_messages",
                    "requestId": "h",
                    "sessionId": session["sessionId"],
                }
            )
    finally:
        await gateway.stop()

    order = kinds(events)
    reset_at = order.index("chunk:reset")
    assert all(k == "stream_token" for k in order[:reset_at])
    after = events[reset_at + 1 :]
    assert "".join(e["token"] for e in after if e["type"] == "stream_token") == full
    assert events[reset_at]["data"]["state"]["rawResponse"]["reset"]["attempt"] >= 2
    assert events[-1]["type"] == "eventual_response"
    assert events[-1]["data"]["data"]["response"]["responseParts"] == [full]
    replies = [m for m in history["data"]["messages"] if m["direction"] == "outbound"]
    assert [m["content"]["text"] for m in replies] == [full]
    assert replies[0]["id"] == events[-1]["data"]["data"]["messageId"]
    assert len(fake_model.requests) == 2


async def test_worker_subprocess_needs_stores(tmp_path):
    """Without configured or running stores the worker says what is missing and exits."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TEMPORAL_ADDRESS")}
    env["PARLEY_DATA_DIR"] = str(tmp_path)
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "worker.py"], env=env, capture_output=True, text=True
    )
    assert done.returncode != 0
    assert "DATABASE_URL and TEMPORAL_ADDRESS not set" in done.stderr
