"""The widget's server side: an agent's profile (greeting, starters, accent), set by the CLI
and the admin API, read by the sites the agent's embed policy allows."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid

import httpx
import pytest
from pydantic import SecretStr

from parley.settings import Settings
from parley.storage import agent_widget, tool_labels
from parley.tools import ToolRegistry
from tests.helpers import ADMIN_AUTH, ADMIN_TOKEN, GatewayServer, running_gateway


async def parley_cli(settings: Settings, *args: str) -> tuple[int, str]:
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url or "",
        "TEMPORAL_ADDRESS": "unused:7233",
        "PARLEY_LOG_LEVEL": "WARNING",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "parley",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode()


async def test_the_cli_sets_a_profile_the_allowed_site_reads(settings: Settings) -> None:
    agent = f"shop-{uuid.uuid4().hex[:6]}"
    code, out = await parley_cli(
        settings,
        "agent",
        agent,
        "--name",
        "Shop helper",
        "--origin",
        "https://shop.example",
        "--greeting",
        "Hi! Ask me about orders.",
        "--starter",
        "Where is my order?",
        "--starter",
        "How do returns work?",
        "--accent",
        "#0a7d52",
    )
    assert code == 0, out
    strict = settings.model_copy(update={"widget_auth_strict": True})
    async with (
        running_gateway(strict) as gateway,
        httpx.AsyncClient(base_url=gateway.http_url) as http,
    ):
        allowed = await http.get(
            f"/widget/agents/{agent}", headers={"origin": "https://shop.example"}
        )
        refused = await http.get(
            f"/widget/agents/{agent}", headers={"origin": "https://evil.example"}
        )
        unknown = await http.get("/widget/agents/never-registered")
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://shop.example"
    body = allowed.json()
    assert isinstance(body.pop("toolLabels"), dict)  # the workers' tools (see below)
    assert body == {
        "agentId": agent,
        "name": "Shop helper",
        "greeting": "Hi! Ask me about orders.",
        "starters": ["Where is my order?", "How do returns work?"],
        "accent": "#0a7d52",
    }
    # The refusal is readable by the refused site (its widget logs why); the profile is not.
    assert refused.status_code == 403 and refused.headers["access-control-allow-origin"] == "*"
    assert refused.json() == {"error": "this site may not embed this agent"}
    assert unknown.headers["access-control-allow-origin"] == "*"
    assert unknown.status_code == 404  # strict: an unregistered agent has no widget


async def test_the_cli_refuses_a_bad_profile(settings: Settings) -> None:
    code, out = await parley_cli(settings, "agent", "x", "--name", "X", "--accent", "red")
    assert code != 0 and "--accent" in out


async def test_the_admin_api_sets_a_profile_in_its_organization(settings: Settings) -> None:
    agent = f"desk-{uuid.uuid4().hex[:6]}"
    code, out = await parley_cli(settings, "agent", agent, "--name", "Desk", "--org", "acme")
    assert code == 0, out
    admin = settings.model_copy(update={"admin_token": SecretStr(ADMIN_TOKEN)})
    async with (
        running_gateway(admin) as gateway,
        httpx.AsyncClient(base_url=gateway.http_url, headers=ADMIN_AUTH) as http,
    ):
        url = f"/admin/agents/{agent}/widget?org=acme"
        body = {"greeting": "Hello from Acme.", "starters": ["Track a parcel"], "accent": "#123abc"}
        saved = await http.put(url, json=body)
        invalid = await http.put(url, json={"starters": ["a"] * 5})
        elsewhere = await http.put(f"/admin/agents/{agent}/widget?org=other", json=body)
        read = await http.get(f"/widget/agents/{agent}")
    assert saved.status_code == 200 and saved.json()["greeting"] == "Hello from Acme."
    assert invalid.status_code == 400 and "starters" in invalid.json()["error"]
    assert elsewhere.status_code == 404  # not that organization's agent
    assert read.json()["starters"] == ["Track a parcel"] and read.json()["accent"] == "#123abc"


@pytest.mark.usefixtures("worker")
async def test_tools_labels_reach_the_profile(gateway: GatewayServer) -> None:
    """The worker records its tools' customer-facing labels at start; the gateway, which has
    no tool registry, serves them with every profile. Unlabelled tools are not named."""
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        labels = (await http.get(f"/widget/agents/{uuid.uuid4()}")).json()["toolLabels"]
    assert labels["order_status"] == "Order lookup"  # @tool(label=...)
    assert labels["issue_refund"] == "Refund"
    assert labels["knowledge_search"] == "Help article search"  # a built-in
    assert "add_numbers" not in labels and "delete_contact" not in labels


async def test_a_worker_without_a_label_takes_it_back(pool) -> None:
    async with pool.connection() as conn:
        await tool_labels.record(conn, {"label_probe": "Probe", "other_probe": None})
        before = await tool_labels.labels(conn)
        await tool_labels.record(conn, {"label_probe": None})
        after = await tool_labels.labels(conn)
    assert before["label_probe"] == "Probe" and "other_probe" not in before
    assert "label_probe" not in after


def test_a_label_is_short_text() -> None:
    registry = ToolRegistry()
    schema = {"type": "object", "properties": {}}
    assert registry.register("a", "A.", schema, lambda _: 1, label="Lookup").label == "Lookup"
    for bad in ("", "   ", "x" * 81):
        with pytest.raises(ValueError, match="label"):
            registry.register("b", "B.", schema, lambda _: 1, label=bad)


async def test_the_demo_page_greets_with_starters_unless_an_operator_set_its_agent(pool) -> None:
    from parley import demo

    async with pool.connection() as conn:
        await demo.seed_widget(conn, "default")
        seeded = await agent_widget.profile(conn, demo.DEMO_AGENT_ID)
        mine = agent_widget.WidgetProfile(greeting="Ours.", starters=["Mine?"])
        await agent_widget.set_profile(conn, demo.DEMO_AGENT_ID, mine)
        await demo.seed_widget(conn, "default")  # the next start of a demo worker
        kept = await agent_widget.profile(conn, demo.DEMO_AGENT_ID)
    assert seeded == demo.DEMO_WIDGET and len(seeded.starters) == 3
    assert kept == mine
