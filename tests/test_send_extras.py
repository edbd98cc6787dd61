"""send_message's images, files and skill, end to end: the request the model server records,
what the turn's tools see, what is stored, and what is refused before anything runs."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import httpx
import psycopg
import pytest
from click.testing import CliRunner
from pydantic import SecretStr
from temporalio.service import RPCError, RPCStatusCode

from parley import prompts
from parley.attachments import File, Limits, image_format, parse_files, parse_images
from parley.settings import Settings
from parley.skills import BUILT_IN_TOOLS, Skill
from parley.stack.cli import main as cli
from parley.stack.fake_anthropic import FakeAnthropic, Reply, ToolCall, cache_breakpoints
from parley.storage import skills
from parley.turn.types import turn_id
from tests import tools_for_tests
from tests.helpers import (
    ADMIN_AUTH,
    ADMIN_TOKEN,
    Event,
    GatewayServer,
    WsClient,
    assert_still_open,
    run_turn,
    running_gateway,
)

pytestmark = pytest.mark.usefixtures("worker")

# A 1x1 PNG, and JPEG bytes labelled as PNG (the bytes decide the media type sent).
PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
JPEG = base64.b64encode(b"\xff\xd8\xff\xe0" + bytes(60)).decode()
PHOTO = "https://cdn.example.com/photo.jpg"
CSV = "data:text/csv;base64," + base64.b64encode(b"sku,qty\nA-1,3\n").decode()
SPEC = "https://files.example.com/spec.pdf"


def png_block(data: str = PNG, media_type: str = "image/png") -> dict[str, Any]:
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


def url_block(url: str) -> dict[str, Any]:
    return {"type": "image", "source": {"type": "url", "url": url}}


def words(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


@pytest.fixture
async def session(client: WsClient) -> dict:
    return await client.create_session(str(uuid.uuid4()))


async def stored(pool, conversation_id: str) -> tuple[list[str], list[str]]:
    """The conversation's message texts and the session's turn ids, as PostgreSQL has them."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "select text from messages where conversation_id = %s order by seq", (conversation_id,)
        )
        texts = [r["text"] for r in await cur.fetchall()]
        cur = await conn.execute(
            "select t.id from turns t join sessions s on s.id = t.session_id"
            " where s.conversation_id = %s",
            (conversation_id,),
        )
        return texts, [r["id"] for r in await cur.fetchall()]


async def refused(client: WsClient, session_id: str, request_id: str, **fields: Any) -> Event:
    """Send a message that must be refused: its one event, with nothing after it."""
    reply = await client.request(
        {
            "action": "send_message",
            "requestId": request_id,
            "sessionId": session_id,
            "message": "hello",
            **fields,
        }
    )
    assert reply["type"] == "error" and reply["requestId"] == request_id, reply
    await assert_still_open(client)  # the next event is the pong: no 202, nothing else
    return reply["error"]


# -- parsing, without a server ---------------------------------------------------------


def test_malformed_entries_are_dropped_and_bytes_decide_the_image_type() -> None:
    images = parse_images(
        [
            {"url": f"data:image/png;base64,{PNG}", "detail": "high"},
            {"url": PHOTO},
            {"url": "http://cdn.example.com/plain-http.jpg"},  # https only
            {"url": "data:image/png;base64,not base64!"},
            {"url": "data:image/svg+xml;base64,PHN2Zy8+"},  # a format Claude does not read
            {"url": f"data:text/plain;base64,{PNG}"},  # not declared an image
            {"url": PHOTO, "detail": "ultra"},
            {"url": "https://cdn.example.com/a photo.jpg"},
            {"url": "https://" + "x" * 2100 + ".com/a.jpg"},
            {"detail": "low"},
            "https://cdn.example.com/bare-string.jpg",
            {"url": f"data:image/png;base64,{JPEG}"},
        ]
    )
    assert [(i.media_type, i.url, i.detail) for i in images] == [
        ("image/png", None, "high"),
        (None, PHOTO, None),
        ("image/jpeg", None, None),
    ]
    assert images[0].data == base64.b64decode(PNG)
    assert image_format(b"RIFF\0\0\0\0WEBPVP8 ") == "image/webp"
    assert image_format(b"GIF89a...") == "image/gif"
    files = parse_files(
        [
            {"name": "order.csv", "mimeType": "text/csv", "url": CSV},
            {"name": "spec.pdf", "url": SPEC},
            {"name": "", "url": SPEC},
            {"name": "x" * 256, "url": SPEC},
            {"name": "a.txt", "url": "ftp://files.example.com/a.txt"},
            {"name": "b.txt", "url": "data:text/plain;base64,%%%"},
            {"name": "c.txt", "mimeType": 7, "url": SPEC},
            {"url": SPEC},
        ]
    )
    assert files == (File("order.csv", CSV, "text/csv"), File("spec.pdf", SPEC))
    assert parse_images(None) == () and parse_files([]) == ()
    with pytest.raises(ValueError):
        parse_images({"url": PHOTO})


def test_limits_count_what_remains() -> None:
    images, files = parse_images([{"url": PHOTO}] * 3), parse_files([{"name": "a", "url": SPEC}])
    assert Limits(3, 10, 1).problem(images, files) is None
    assert Limits(2, 10, 1).problem(images, files) == "at most 2 images per message"
    assert Limits(0, 0, 0).problem(images, files * 50) is None  # 0: off
    assert Limits(1, 0, 0).problem(images[:1], files) is None
    inline = parse_images([{"url": PHOTO}, {"url": f"data:image/png;base64,{PNG}"}])
    assert Limits(5, 40, 5).problem(inline, ()) == "image 2 is larger than 40 bytes"
    assert Limits(5, 5, 1).problem((), files * 2) == "at most 1 file per message"


# -- images ----------------------------------------------------------------------------


async def test_images_reach_the_model_with_the_message_and_later_turns(
    client: WsClient, session: dict, fake_model: FakeAnthropic, pool
) -> None:
    fake_model.enqueue(Reply(text="A red dot and a photo."), Reply(text="Still a red dot."))
    images = [
        {"url": f"data:image/png;base64,{PNG}", "detail": "low"},
        {"url": PHOTO},
        {"url": "http://cdn.example.com/plain-http.jpg"},  # dropped, the turn runs
        {"url": "data:image/png;base64,not base64!"},  # dropped
        {"url": f"data:image/png;base64,{JPEG}"},  # really a JPEG: sent as one
    ]
    first = await run_turn(client, session["sessionId"], "What is in these?", "img", images=images)
    assert first[-1]["type"] == "eventual_response"
    sent = [
        png_block(),
        url_block(PHOTO),
        png_block(JPEG, "image/jpeg"),
        words("What is in these?"),
    ]
    request = fake_model.requests[0].body
    assert request["messages"][-1]["content"][1:] == sent  # after its grounding

    second = await run_turn(client, session["sessionId"], "And now?", "img2")
    assert second[-1]["type"] == "eventual_response"
    later = fake_model.requests[1].body
    assert later["messages"][0] == {"role": "user", "content": sent}
    assert later["messages"][-1]["content"][1:] == [words("And now?")]
    assert cache_breakpoints(later) <= 4 and "cache_control" in later["messages"][1]["content"][-1]
    texts, _ = await stored(pool, session["conversationId"])
    assert texts == ["What is in these?", "A red dot and a photo.", "And now?", "Still a red dot."]


async def test_a_linked_image_the_api_cannot_fetch_does_not_fail_the_conversation(
    client: WsClient, session: dict, fake_model: FakeAnthropic
) -> None:
    broken = "https://broken.example.com/gone.png"

    def refuse_the_link(body: dict[str, Any]) -> Reply:
        if broken in json.dumps(body):
            return Reply(status=400, error_message="Unable to download the file.")
        return Reply(text="I could not see the linked picture.")

    images = [{"url": broken}, {"url": f"data:image/png;base64,{PNG}"}]
    fake_model.enqueue(refuse_the_link, refuse_the_link, refuse_the_link, refuse_the_link)
    first = await run_turn(client, session["sessionId"], "Look", "l1", images=images)
    assert first[-1]["type"] == "eventual_response"
    retried = fake_model.requests[1].body["messages"][-1]["content"]
    assert retried[1:] == [words(prompts.UNAVAILABLE_IMAGE), png_block(), words("Look")]
    # The next turn sends the stored link again, is refused again, and runs all the same.
    second = await run_turn(client, session["sessionId"], "Well?", "l2")
    assert second[-1]["type"] == "eventual_response"
    assert len(fake_model.requests) == 4


async def test_attachments_over_their_limits_are_refused_before_anything_runs(
    settings: Settings, fake_model: FakeAnthropic
) -> None:
    small = settings.model_copy(update={"max_images": 2, "max_image_bytes": 60, "max_files": 1})
    async with (
        running_gateway(small) as gateway,
        await WsClient.open(gateway.ws_url) as client,
    ):
        session = await client.create_session(str(uuid.uuid4()))
        sid = session["sessionId"]
        inline = {"url": f"data:image/png;base64,{PNG}"}  # 70 bytes
        spec = {"name": "spec.pdf", "url": SPEC}
        for rid, fields, message in (
            ("many", {"images": [{"url": PHOTO}] * 3}, "at most 2 images per message"),
            ("big", {"images": [{"url": PHOTO}, inline]}, "image 2 is larger than 60 bytes"),
            ("files", {"files": [spec, spec]}, "at most 1 file per message"),
            ("shape", {"images": {"url": PHOTO}}, "'images' must be a list"),
        ):
            error = await refused(client, sid, rid, **fields)
            assert error == {"code": "VALIDATION_ERROR", "message": message}
        assert await stored(gateway.services.pool, session["conversationId"]) == ([], [])
        assert fake_model.requests == []
        # Malformed entries do not count: they are dropped and the turn runs.
        fake_model.enqueue(Reply(text="ok"))
        junk = [{"url": "ftp://x"}, {"detail": "low"}, "x", {"url": PHOTO}]
        events = await run_turn(client, sid, "hi", "ok", images=junk, files=[spec, {"name": ""}])
        assert events[-1]["type"] == "eventual_response"
        current = fake_model.requests[0].body["messages"][-1]["content"]
        assert current[1:] == [url_block(PHOTO), words("hi")]


# -- files -----------------------------------------------------------------------------


async def test_tools_read_the_files_and_the_model_never_sees_them(
    client: WsClient, session: dict, fake_model: FakeAnthropic
) -> None:
    files = [
        {"name": "order.csv", "mimeType": "text/csv", "url": CSV},
        {"name": "spec.pdf", "url": SPEC},
        {"name": "", "url": SPEC},  # dropped
    ]
    read = ToolCall("attached_files", {})
    fake_model.enqueue(
        Reply(tool_calls=[read]),
        Reply(text="I have read your order."),
        Reply(tool_calls=[ToolCall("attached_files", {})]),
        Reply(text="Nothing new attached."),
    )
    tools_for_tests.SEEN_FILES.clear()
    sid = session["sessionId"]
    first = await run_turn(client, sid, "Here is my order", "f1", files=files)
    result = next(
        e
        for e in first
        if e["type"] == "stream_chunk"
        and e["node"] == "attached_files"
        and "toolResult" in e["data"]["state"]["rawResponse"]
    )
    assert result["data"]["state"]["rawResponse"]["toolResult"]["result"] == {"files": 2}
    second = await run_turn(client, sid, "Anything else?", "f2")
    assert second[-1]["type"] == "eventual_response"

    order = File("order.csv", CSV, "text/csv")
    spec = File("spec.pdf", SPEC)
    seen = tools_for_tests.SEEN_FILES
    assert seen == [
        (turn_id(sid, "f1"), (order, spec), [order, spec]),
        (turn_id(sid, "f2"), (), [order, spec]),  # earlier files stay with their message
    ]
    assert len(fake_model.requests) == 4
    for request in fake_model.requests:
        sent = json.dumps(request.body)
        assert all(secret not in sent for secret in ("order.csv", "spec.pdf", CSV, SPEC))


# -- skills ----------------------------------------------------------------------------


async def test_an_unknown_skill_runs_nothing(
    client: WsClient, session: dict, fake_model: FakeAnthropic, pool, gateway: GatewayServer
) -> None:
    sid = session["sessionId"]
    name = f"elsewhere-{uuid.uuid4().hex[:6]}"
    async with pool.connection() as conn:  # another organization's skill is not this one's
        await skills.save(conn, "another-org", Skill(name, "Be terse."))
    for rid, skill in (("s1", "no-such-skill"), ("s2", name)):
        error = await refused(client, sid, rid, skill=skill)
        assert error == {"code": "SKILL_NOT_FOUND", "message": f"skill '{skill}' not found"}
        with pytest.raises(RPCError) as missing:
            await gateway.services.temporal.get_workflow_handle(turn_id(sid, rid)).describe()
        assert missing.value.status == RPCStatusCode.NOT_FOUND
    bad = await refused(client, sid, "s3", skill="../etc/passwd")
    assert bad["code"] == "VALIDATION_ERROR" and "'skill'" in bad["message"]
    assert await stored(pool, session["conversationId"]) == ([], [])
    assert fake_model.requests == []


async def test_a_skill_adds_its_instructions_and_restricts_the_tools(
    client: WsClient, session: dict, fake_model: FakeAnthropic, pool
) -> None:
    name = f"orders-{uuid.uuid4().hex[:6]}"
    async with pool.connection() as conn:  # an unregistered agent's sessions are PARLEY_ORG's
        await skills.save(conn, "default", Skill(name, "Only discuss orders.", ("order_status",)))
    fake_model.enqueue(
        Reply(
            tool_calls=[
                ToolCall("add_numbers", {"a": 1, "b": 2}),  # not offered: never runs
                ToolCall("order_status", {"order_id": "ORD-1"}),
            ]
        ),
        Reply(text="ORD-1 has shipped."),
        Reply(text="Plain turn."),
    )
    events = await run_turn(client, session["sessionId"], "Where is ORD-1?", "sk", skill=name)
    results = {
        e["node"]: e["data"]["state"]["rawResponse"]["toolResult"]
        for e in events
        if e["type"] == "stream_chunk" and "toolResult" in e["data"]["state"]["rawResponse"]
    }
    assert results["add_numbers"] == {
        "name": "add_numbers",
        "isError": True,
        "result": "unknown tool 'add_numbers'",
    }
    assert results["order_status"]["isError"] is False
    assert events[-1]["type"] == "eventual_response"
    for request in fake_model.requests[:2]:  # both of the turn's calls
        body = request.body
        offered = {t["name"] for t in body["tools"]}  # its tools, and the built-in ones
        assert offered - BUILT_IN_TOOLS == {"order_status"}
        assert {"knowledge_search", "escalate_to_human"} <= offered
        persona, skill = body["system"]
        assert "cache_control" not in persona and "cache_control" in skill
        assert skill["text"].endswith("Only discuss orders.") and name in skill["text"]
        assert cache_breakpoints(body) <= 4

    await run_turn(client, session["sessionId"], "And in general?", "plain")
    plain = fake_model.requests[2].body
    assert {"add_numbers", "order_status"} <= {t["name"] for t in plain["tools"]}
    assert len(plain["system"]) == 1


async def test_skills_through_the_admin_api(settings: Settings) -> None:
    server = GatewayServer(settings.model_copy(update={"admin_token": SecretStr(ADMIN_TOKEN)}))
    await server.start()
    org_id = f"org-{uuid.uuid4().hex[:8]}"
    skill = {"prompt": "Answer about returns only.", "tools": ["order_status"], "org": org_id}
    try:
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            assert (await http.put("/admin/skills/returns", json=skill)).status_code == 401
            created = await http.put("/admin/skills/returns", json=skill, headers=ADMIN_AUTH)
            assert created.status_code == 201
            assert created.json() == {**skill, "name": "returns"}
            everything = {"prompt": "Anything goes.", "org": org_id}
            replaced = await http.put("/admin/skills/returns", json=everything, headers=ADMIN_AUTH)
            assert replaced.status_code == 200 and replaced.json()["tools"] is None
            await http.put("/admin/skills/billing", json=everything, headers=ADMIN_AUTH)
            scope = {"org": org_id}
            listed = await http.get("/admin/skills", params=scope, headers=ADMIN_AUTH)
            assert [s["name"] for s in listed.json()["skills"]] == ["billing", "returns"]
            other = await http.get("/admin/skills/returns", params={"org": "x"}, headers=ADMIN_AUTH)
            assert other.status_code == 404
            one = await http.get("/admin/skills/returns", params=scope, headers=ADMIN_AUTH)
            assert one.json()["prompt"] == "Anything goes."
            for path, body in (
                ("/admin/skills/bad%20name", everything),
                ("/admin/skills/x", {"prompt": "  ", "org": org_id}),
                ("/admin/skills/x", {"prompt": "p", "tools": ["no spaces"], "org": org_id}),
                ("/admin/skills/x", {"prompt": "p" * 20_001, "org": org_id}),
                ("/admin/skills/x", {"prompt": "p", "extra": 1}),
            ):
                assert (await http.put(path, json=body, headers=ADMIN_AUTH)).status_code == 400
            gone = await http.delete("/admin/skills/returns", params=scope, headers=ADMIN_AUTH)
            assert gone.status_code == 204
            again = await http.delete("/admin/skills/returns", params=scope, headers=ADMIN_AUTH)
            assert again.status_code == 404
        async with server.services.pool.connection() as conn:
            assert [s.name for s in await skills.list_skills(conn, org_id)] == ["billing"]
    finally:
        await server.stop()


def test_parley_skill_sets_lists_and_deletes(settings: Settings, tmp_path) -> None:
    from parley.settings import get_settings

    database_url = settings.database_url or ""
    env = {"DATABASE_URL": database_url, "TEMPORAL_ADDRESS": settings.temporal_address}
    org_id = f"cli-{uuid.uuid4().hex[:8]}"
    prompt = tmp_path / "refunds.md"
    prompt.write_text("Walk the person through a refund.")
    get_settings.cache_clear()
    try:
        runner = CliRunner()

        def run(*args: str) -> str:
            result = runner.invoke(cli, ["skill", *args], env=env)
            assert result.exit_code == 0, result.output
            return result.output

        assert "created" in run("set", "refunds", "--org", org_id, "--prompt-file", str(prompt))
        assert "replaced" in run(
            "set", "refunds", "--org", org_id, "--prompt", "Refunds only.", "--tools", "a,b"
        )
        run("set", "greet", "--org", org_id, "--prompt", "Say hello.", "--tools", "")
        assert run("list", "--org", org_id).splitlines() == [
            "greet\tbuilt-in tools only",
            "refunds\ta, b",
        ]
        run("delete", "greet", "--org", org_id)
        missing = runner.invoke(cli, ["skill", "delete", "greet", "--org", org_id], env=env)
        assert missing.exit_code == 1 and "no skill 'greet'" in missing.output
        bad = runner.invoke(cli, ["skill", "set", "a/b", "--prompt", "x"], env=env)
        assert bad.exit_code == 2
    finally:
        get_settings.cache_clear()
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "select name, prompt, tools from skills where org_id = %s", (org_id,)
        ).fetchall()
    assert rows == [("refunds", "Refunds only.", ["a", "b"])]
