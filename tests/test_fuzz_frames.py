"""A seeded fuzz of the WebSocket edge: thousands of mutated frames get protocol answers,
never an internal error or a dropped socket, and the gateway stays healthy throughout.

Frames are mutated from valid templates of every action (field values swapped for hostile
ones: NUL, surrogates, huge strings, deep nesting, wrong types, non-finite numbers, ids of
sessions that do not exist), so they reach every handler's validation without starting
turns. Seeded: a failure names the frame and reruns the same way.
"""

from __future__ import annotations

import json
import random
from typing import Any

import httpx
import pytest

from tests.helpers import GatewayServer, WsClient

FRAMES = 5_000
SEED = 20261128

NOBODY = "00000000-0000-4000-8000-000000000000"  # a session id that does not exist

TEMPLATES: list[dict[str, Any]] = [
    {"action": "ping", "requestId": "p"},
    {"action": "create_conversation_session", "requestId": "c", "agentId": "fuzz"},
    {
        "action": "get_session",
        "requestId": "g",
        "sessionId": NOBODY,
    },
    {
        "action": "get_conversation_messages",
        "requestId": "m",
        "sessionId": NOBODY,
        "limit": 10,
        "cursor": "x",
    },
    {
        "action": "send_message",
        "requestId": "s",
        "sessionId": NOBODY,
        "message": "hi",
        "stream": True,
    },
    {
        "action": "confirm_tool_action",
        "requestId": "a",
        "sessionId": NOBODY,
        "approved": True,
    },
    {
        "action": "submit_interaction",
        "requestId": "i",
        "sessionId": NOBODY,
        "interactionId": NOBODY,
        "kind": "identity_intake",
        "values": {"email": "a@b.io"},
        "declined": False,
    },
    {"action": "cancel", "requestId": "x", "sessionId": NOBODY},
    {
        "action": "resume_turn",
        "requestId": "r",
        "sessionId": NOBODY,
    },
]

HOSTILE: list[Any] = [
    None,
    True,
    0,
    -1,
    1e308,
    "",
    " ",
    "\u0000",
    "a\ud800b",
    "é" * 300,
    "x" * 5_000,
    [],
    {},
    [[[[[]]]]],
    {"a": {"b": {"c": {"d": {"e": {}}}}}},
    "turn:x:y",
    "../../etc/passwd",
    "<script>alert(1)</script>",
    "' or 1=1 --",
]


def mutate(rng: random.Random) -> str:
    """One hostile frame, as text."""
    frame = dict(rng.choice(TEMPLATES))
    for _ in range(rng.randint(1, 3)):
        key = rng.choice([*frame.keys(), "metadata", "authContext", "userName", "limit"])
        frame[key] = rng.choice(HOSTILE)
    text = json.dumps(frame)
    roll = rng.random()
    if roll < 0.05:
        return text.replace("1e+308", "Infinity").replace("true", "NaN", 1)
    if roll < 0.10:
        return "[" * rng.randint(50, 5_000)
    if roll < 0.15:
        return text[: rng.randint(0, len(text))]  # truncated JSON
    return text


@pytest.mark.timeout(120)
async def test_thousands_of_hostile_frames(gateway: GatewayServer) -> None:
    rng = random.Random(SEED)
    answers: dict[str, int] = {}
    async with (
        await WsClient.open(gateway.ws_url) as client,
        httpx.AsyncClient(base_url=gateway.http_url) as http,
    ):
        for n in range(FRAMES):
            text = mutate(rng)
            await client.send(text)
            if n % 250 == 0:
                assert (await http.get("/healthz")).status_code == 200
            # Every frame is answered by at most one event; collect what has arrived so
            # far by sending a ping barrier now and then.
            if n % 50 == 49:
                await client.send({"action": "ping", "requestId": f"barrier-{n}"})
                while True:
                    event = await client.recv(timeout=30)
                    if event.get("requestId") == f"barrier-{n}" and event["type"] == "pong":
                        break
                    code = event.get("error", {}).get("code", event["type"])
                    answers[code] = answers.get(code, 0) + 1
                    assert code != "INTERNAL_ERROR", (n, text[:200], event)
        assert (await http.get("/healthz")).status_code == 200
    assert answers.get("VALIDATION_ERROR", 0) > 1_000, answers
