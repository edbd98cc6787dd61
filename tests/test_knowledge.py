"""Knowledge: ingestion, access-filtered retrieval in PostgreSQL, grounding and citations."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from parley.knowledge import access, documents, search, types
from parley.knowledge.chunking import chunk_text
from parley.knowledge.ingest import discover, ingest_files
from parley.knowledge.rerank import lexical_rerank
from parley.knowledge.types import Access, Document, Requester
from parley.stack.fake_anthropic import FakeAnthropic, RecordedRequest, Reply, ToolCall
from parley.storage import organizations, sessions
from parley.widget_auth import sign_auth_context
from tests.helpers import ADMIN_AUTH, ADMIN_TOKEN, GatewayServer, WsClient, kinds, run_turn

DATA = Path(__file__).parent / "data"
KEY = "kb-signing-key"

RETURNS = """# Returns

## Return window

Returns are accepted within 17 days of delivery, unused and in the original packaging.

## Refund timing

Refunds are paid to the original payment method within 5 business days.
"""
SECRET = "# Salary bands\n\nThe engineering salary bands were revised in March; see the table."


def org() -> str:
    return f"org-{uuid.uuid4().hex[:8]}"


# -- chunking --------------------------------------------------------------------------


def test_chunks_keep_their_headings_and_overlap() -> None:
    text = "# Guide\n\n## Part one\n\n" + " ".join(f"Sentence number {i}." for i in range(200))
    chunks = chunk_text(text, max_chars=400, overlap=60)
    assert len(chunks) > 5
    assert {c.heading for c in chunks} == {"Guide > Part one"}
    assert all(len(c.content) <= 400 + 60 + 1 for c in chunks)
    for before, after in itertools.pairwise(chunks):
        assert before.content[-30:] in after.content  # the overlap carries the boundary
    nested = chunk_text("# A\n\nintro\n\n## B\n\nbee\n\n### C\n\nsea\n\n## D\n\ndee")
    assert [(c.heading, c.content) for c in nested] == [
        ("A", "intro"),
        ("A > B", "bee"),
        ("A > B > C", "sea"),
        ("A > D", "dee"),
    ]


# -- ingestion -------------------------------------------------------------------------


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "kb"
    (root / "policies").mkdir(parents=True)
    (root / "policies" / "returns.md").write_text(RETURNS)
    (root / "faq.txt").write_text("Opening hours\n\nThe support line is open 9 to 17 on weekdays.")
    (root / "about.html").write_text(
        "<html><head><title>About us</title><script>var x = 'tracking';</script></head>"
        "<body><h1>About</h1><p>We are a small shop in Ghent founded in 2011.</p></body></html>"
    )
    shutil.copy(DATA / "gift-cards.pdf", root / "gift-cards.pdf")
    (root / "ignored.png").write_bytes(b"\x89PNG")
    return root


async def test_ingest_reingest_change_and_delete(pool, corpus: Path) -> None:
    org_id = org()
    files = discover([corpus])
    assert [doc_id for _, doc_id in files] == [
        "about.html",
        "faq.txt",
        "gift-cards.pdf",
        "policies/returns.md",
    ]
    async with pool.connection() as conn:
        first = await ingest_files(conn, files, org_id=org_id, access=Access(public=True))
        again = await ingest_files(conn, files, org_id=org_id, access=Access(public=True))
    assert (first.seen, first.new, first.changed, first.skipped) == (4, 4, 0, 0)
    assert first.chunks >= 4
    assert (again.new, again.changed, again.skipped, again.chunks) == (0, 0, 4, 0)

    anyone = Requester(org_id)
    async with pool.connection() as conn:
        about = await search.search(conn, anyone, "Where was the shop founded?")
        assert about[0].document_id == "about.html" and about[0].title == "About us"
        assert "tracking" not in about[0].content  # scripts are stripped
        gift = await search.search(conn, anyone, "do gift cards expire")
        assert gift[0].document_id == "gift-cards.pdf"
        docs = await documents.list_documents(conn, org_id)
    assert {d["id"]: d["chunks"] > 0 for d in docs} == dict.fromkeys(
        ["about.html", "faq.txt", "gift-cards.pdf", "policies/returns.md"], True
    )

    (corpus / "policies" / "returns.md").write_text(RETURNS.replace("17 days", "30 days"))
    async with pool.connection() as conn:
        changed = await ingest_files(conn, files, org_id=org_id, access=Access(public=True))
        assert (changed.changed, changed.skipped) == (1, 3)
        [hit] = await search.search(conn, anyone, "return window days", limit=1)
        assert "30 days" in hit.content and "17 days" not in hit.content
        assert await documents.delete_document(conn, org_id, "policies/returns.md")
        assert not await search.search(conn, anyone, "return window refund")
        assert not await documents.delete_document(conn, org_id, "policies/returns.md")

    single = discover([corpus / "faq.txt"])
    assert single == [(corpus / "faq.txt", "faq.txt")]


async def test_stemmed_or_query_finds_the_policy(pool) -> None:
    org_id = org()
    async with pool.connection() as conn:
        await documents.upsert_document(
            conn, org_id, Document("returns.md", "Returns", "returns.md", RETURNS, Access(True))
        )
        hits = await search.search(conn, Requester(org_id), "return policy")
    assert hits and "Returns are accepted" in hits[0].content
    assert hits[0].heading == "Returns > Return window"
    assert 0 < hits[0].score <= 1


async def test_access_control_is_in_the_sql(pool) -> None:
    org_id = org()
    docs = [
        Document("handbook.md", "Handbook", "handbook.md", SECRET, Access(users=("alice",))),
        Document(
            "team.md", "Team", "team.md", SECRET.replace("Salary", "Bonus"), Access(groups=("eng",))
        ),
        Document("public.md", "Public", "https://shop.example.com/p", RETURNS, Access(public=True)),
    ]
    async with pool.connection() as conn:
        for doc in docs:
            await documents.upsert_document(conn, org_id, doc)
        await conn.execute(
            "insert into user_groups (org_id, user_id, group_id) values (%s, 'carol', 'eng')",
            (org_id,),
        )

        async def readable(user: str | None, org_for: str = org_id) -> set[str]:
            groups = await access.requester_groups(conn, org_for, user)
            hits = await search.search(
                conn, Requester(org_for, user, groups), "salary bonus bands returns", limit=10
            )
            return {h.document_id for h in hits}

        assert await readable("alice") == {"handbook.md", "public.md"}
        assert await readable("bob") == {"public.md"}
        assert await readable(None) == {"public.md"}
        assert await readable("carol") == {"team.md", "public.md"}
        assert await readable("alice", org()) == set()  # another organization sees nothing
        public = await search.search(conn, Requester(org_id), "returns")
        assert {h.url for h in public} == {"https://shop.example.com/p"}


def test_lexical_rerank_prefers_coverage() -> None:
    hits = [
        types.Hit("a", "A", "a", "", "shipping shipping shipping shipping", 0.9),
        types.Hit("b", "B", "b", "Shipping costs", "express shipping costs 14.90", 0.5),
    ]
    assert [h.document_id for h in lexical_rerank("shipping costs", hits, 2)] == ["b", "a"]


async def test_cli_ingest(settings, corpus: Path, pool) -> None:
    org_id = org()
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "TEMPORAL_ADDRESS": "unused:7233",
        "PARLEY_LOG_LEVEL": "WARNING",
    }
    run = [
        sys.executable,
        "-m",
        "parley",
        "ingest",
        str(corpus),
        "--org",
        org_id,
        "--users",
        "u1,u2",
    ]
    done = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "readable by user u1, user u2" in done.stdout
    assert "4 documents seen: 4 new, 0 changed, 0 skipped" in done.stdout
    again = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60)
    assert "0 new, 0 changed, 4 skipped" in again.stdout
    async with pool.connection() as conn:
        assert await search.search(conn, Requester(org_id, "u1"), "gift cards")
        assert not await search.search(conn, Requester(org_id, "u3"), "gift cards")
    bad = subprocess.run(
        [*run[:4], str(corpus), "--public", "--users", "x"], env=env, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "cannot be combined" in bad.stderr


# -- the admin API ---------------------------------------------------------------------


async def test_admin_api(settings) -> None:
    server = GatewayServer(settings.model_copy(update={"admin_token": SecretStr(ADMIN_TOKEN)}))
    await server.start()
    org_id = org()
    auth = ADMIN_AUTH
    try:
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            doc = {"id": "kb/returns.md", "content": RETURNS, "public": True, "org": org_id}
            assert (await http.post("/admin/documents", json=doc)).status_code == 401
            bad = {"Authorization": "Bearer nope"}
            assert (await http.post("/admin/documents", json=doc, headers=bad)).status_code == 401
            created = await http.post("/admin/documents", json=doc, headers=auth)
            assert created.status_code == 201 and created.json()["outcome"] == "new"
            same = await http.post("/admin/documents", json=doc, headers=auth)
            assert same.json()["outcome"] == "skipped"
            nobody = await http.post(
                "/admin/documents", json={"id": "x", "content": "y"}, headers=auth
            )
            assert nobody.status_code == 400 and "who may read" in nobody.json()["error"]
            listed = await http.get("/admin/documents", params={"org": org_id}, headers=auth)
            assert [d["id"] for d in listed.json()["documents"]] == ["kb/returns.md"]
            gone = await http.delete(
                "/admin/documents/kb/returns.md", params={"org": org_id}, headers=auth
            )
            assert gone.status_code == 204
            groups = await http.put(
                "/admin/users/carol/groups",
                json={"groups": ["eng", "ops", "eng"], "org": org_id},
                headers=auth,
            )
            assert groups.json() == {"org": org_id, "user": "carol", "groups": ["eng", "ops"]}
            async with server.services.pool.connection() as conn:
                assert await access.requester_groups(conn, org_id, "carol") == ("eng", "ops")
            again = await http.delete(
                "/admin/documents/kb/returns.md", params={"org": org_id}, headers=auth
            )
            assert again.status_code == 404
    finally:
        await server.stop()


async def test_admin_api_is_off_without_a_token(gateway: GatewayServer) -> None:
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        response = await http.get("/admin/documents", headers={"Authorization": "Bearer x"})
    assert response.status_code == 404


# -- in the turn ---------------------------------------------------------------------


async def _verified_session(gateway: GatewayServer, pool, org_id: str, user: str | None):
    """A session of `user` (verified through authContext), or an anonymous one."""
    agent = f"agent-{org_id}"
    async with pool.connection() as conn:
        await sessions.upsert_agent(
            conn, agent, name="KB", org_id=org_id, allowed_origins=["*"], auth_key=KEY
        )
    client = await WsClient.open(gateway.ws_url, additional_headers={"Origin": "https://x.test"})
    fields = {}
    if user is not None:
        now = int(time.time())
        fields["authContext"] = {
            "userId": user,
            "timestamp": now,
            "signature": sign_auth_context(KEY, user, now),
        }
    session = await client.create_session(agent, **fields)
    return client, session


def grounding_of(request: RecordedRequest) -> str:
    """The grounding a turn's first model call carried: the block leading the user's message
    (after the conversation, for the prompt cache; see `parley.prompts`)."""
    return request.body["messages"][-1]["content"][0]["text"]


@pytest.mark.usefixtures("worker")
async def test_private_documents_never_reach_other_requesters(
    gateway: GatewayServer, fake_model: FakeAnthropic, pool
) -> None:
    org_id = org()
    async with pool.connection() as conn:
        await documents.upsert_document(
            conn,
            org_id,
            Document("alice.md", "Alice notes", "alice.md", SECRET, Access(users=("alice",))),
        )
        await documents.upsert_document(
            conn, org_id, Document("returns.md", "Returns", "returns.md", RETURNS, Access(True))
        )
    search = ToolCall("knowledge_search", {"query": "salary bands", "limit": 5})
    for user in ("bob", None):
        fake_model.reset()
        fake_model.enqueue(Reply(tool_calls=[search]), Reply(text="I cannot find that."))
        client, session = await _verified_session(gateway, pool, org_id, user)
        async with client:
            events = await run_turn(
                client, session["sessionId"], "What are the salary bands?", "acl"
            )
        grounding = grounding_of(fake_model.requests[0])
        assert "Salary" not in grounding and "alice" not in grounding
        result = next(e for e in events if kinds([e]) == ["chunk:toolResult"])
        assert "Salary" not in str(result) and "alice.md" not in str(result)
        assert "Salary" not in str(fake_model.requests[1].body["messages"])
        assert "citations" not in events[-1]["data"]["data"]
    # Alice herself does see it, in all three places.
    fake_model.reset()
    fake_model.enqueue(Reply(tool_calls=[search]), Reply(text="Here they are."))
    client, session = await _verified_session(gateway, pool, org_id, "alice")
    async with client:
        events = await run_turn(client, session["sessionId"], "What are the salary bands?", "own")
    assert "salary bands were revised" in grounding_of(fake_model.requests[0])
    assert "alice.md" in str(next(e for e in events if kinds([e]) == ["chunk:toolResult"]))
    assert [c["id"] for c in events[-1]["data"]["data"]["citations"]] == ["alice.md"]


@pytest.mark.usefixtures("worker")
async def test_citations_match_what_was_retrieved(
    gateway: GatewayServer, fake_model: FakeAnthropic, pool
) -> None:
    org_id = org()
    async with pool.connection() as conn:
        await documents.upsert_document(
            conn,
            org_id,
            Document(
                "returns.md", "Returns", "https://shop.example.com/returns", RETURNS, Access(True)
            ),
        )
        await documents.upsert_document(
            conn,
            org_id,
            Document(
                "shipping.md",
                "Shipping",
                "kb/shipping.md",
                "# Shipping\n\nStandard shipping takes 5-7 business days.",
                Access(True),
            ),
        )
    fake_model.enqueue(
        Reply(tool_calls=[ToolCall("knowledge_search", {"query": "shipping time"})]),
        Reply(text="Returns within 17 days; shipping takes 5-7 business days."),
    )
    client, session = await _verified_session(gateway, pool, org_id, None)
    async with client:
        events = await run_turn(
            client, session["sessionId"], "How long do I have to return?", "cit"
        )
        citations = events[-1]["data"]["data"]["citations"]
        assert {c["id"] for c in citations} == {"returns.md", "shipping.md"}
        by_id = {c["id"]: c for c in citations}
        assert by_id["returns.md"]["url"] == "https://shop.example.com/returns"
        assert "url" not in by_id["shipping.md"]
        assert by_id["returns.md"]["title"] == "Returns"
        assert all(len(c["snippet"]) <= 280 and c["score"] > 0 for c in citations)
        assert "Returns are accepted within 17 days" in grounding_of(fake_model.requests[0])

        fake_model.enqueue(Reply(text="I don't know."))
        nothing = await run_turn(client, session["sessionId"], "Do you sell zeppelins?", "none")
    assert nothing[-1]["type"] == "eventual_response"
    assert "citations" not in nothing[-1]["data"]["data"]
    assert "No company knowledge matched" in grounding_of(fake_model.requests[-1])


@pytest.mark.usefixtures("worker")
async def test_an_untitled_document_is_cited_by_its_file_name(
    gateway: GatewayServer, fake_model: FakeAnthropic, pool, tmp_path: Path
) -> None:
    """A document with no title of its own (no heading, no HTML or PDF title) is titled by
    its source's file name, `returns.md`, as the reference server does, not by its stem."""
    root = tmp_path / "kb"
    (root / "policies").mkdir(parents=True)
    (root / "policies" / "returns.md").write_text(
        "Returns are accepted within 17 days of delivery, unused."
    )
    (root / "hours.html").write_text("<html><body><p>Open 9 to 17 on weekdays.</p></body></html>")
    (root / "titled.md").write_text("# Warranty\n\nTwo years on every bike.")
    org_id = org()
    async with pool.connection() as conn:
        await ingest_files(conn, discover([root]), org_id=org_id, access=Access(public=True))
        titles = {d["id"]: d["title"] for d in await documents.list_documents(conn, org_id)}
    assert titles == {
        "hours.html": "hours.html",
        "policies/returns.md": "returns.md",
        "titled.md": "Warranty",
    }

    fake_model.enqueue(Reply(text="Within 17 days."))
    client, session = await _verified_session(gateway, pool, org_id, None)
    async with client:
        events = await run_turn(client, session["sessionId"], "How long to return unused?", "t")
    [citation] = events[-1]["data"]["data"]["citations"]
    assert (citation["id"], citation["title"]) == ("policies/returns.md", "returns.md")

    # One stored before (titled by its stem) gets its title on the next ingest, chunks kept.
    async with pool.connection() as conn:
        await conn.execute(
            "update documents set title = 'returns' where org_id = %s and id = %s",
            (org_id, "policies/returns.md"),
        )
        again = await ingest_files(
            conn, discover([root]), org_id=org_id, access=Access(public=True)
        )
        titles = {d["id"]: d["title"] for d in await documents.list_documents(conn, org_id)}
    assert (again.changed, again.skipped, again.chunks) == (1, 2, 0)
    assert titles["policies/returns.md"] == "returns.md"


async def test_an_uploaded_untitled_document_is_titled_by_its_file_name(settings) -> None:
    server = GatewayServer(settings.model_copy(update={"admin_token": SecretStr(ADMIN_TOKEN)}))
    await server.start()
    org_id = org()
    untitled = "Gift cards never expire."
    try:
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            for doc in (
                {"id": "kb/gift-cards.md", "content": untitled},
                {"id": "faq-7", "content": untitled, "source": "https://x.test/help/faq.html"},
                {"id": "plain", "content": untitled},
                {"id": "named", "content": untitled, "title": "Gift cards"},
            ):
                body = {**doc, "public": True, "org": org_id}
                assert (
                    await http.post("/admin/documents", json=body, headers=ADMIN_AUTH)
                ).is_success
            listed = await http.get("/admin/documents", params={"org": org_id}, headers=ADMIN_AUTH)
    finally:
        await server.stop()
    assert {d["id"]: d["title"] for d in listed.json()["documents"]} == {
        "kb/gift-cards.md": "gift-cards.md",
        "faq-7": "faq.html",
        "plain": "plain",
        "named": "Gift cards",
    }


@pytest.mark.usefixtures("worker")
async def test_organization_persona(
    gateway: GatewayServer, fake_model: FakeAnthropic, pool
) -> None:
    org_id = org()
    async with pool.connection() as conn:
        await organizations.set_persona(conn, org_id, "You are Bolt, the bike shop's assistant.")
    fake_model.enqueue(Reply(text="Hi, I am Bolt."))
    client, session = await _verified_session(gateway, pool, org_id, None)
    async with client:
        await run_turn(client, session["sessionId"], "Who are you?", "p")
    assert fake_model.requests[0].body["system"][0]["text"].startswith("You are Bolt")


async def test_demo_knowledge(pool) -> None:
    from parley import demo

    org_id = org()
    async with pool.connection() as conn:
        first = await demo.seed_knowledge(conn, org_id)
        assert first.new == 4 and first.chunks > 0
        assert (await demo.seed_knowledge(conn, org_id)).skipped == 4
        [hit] = await search.search(conn, Requester(org_id), "how many days to return an item", 1)
    assert "17 days" in hit.content and hit.document_id == "returns.md"
