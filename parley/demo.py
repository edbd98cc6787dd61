"""The demo (`PARLEY_DEMO=1`): a refund tool that waits for a person, a few policy
documents so answers come with citations out of the box, and starter questions on the chat
page.

The refund is recorded in `demo_refunds` through the tool call's own transaction, so it
commits together with the execution record: a double refund would be visible there, and
a crash mid-refund leaves neither behind.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from parley.knowledge.embeddings import Embedder
from parley.knowledge.ingest import Summary, discover, ingest_files
from parley.knowledge.types import Access
from parley.storage import agent_widget, demo_refunds, sessions
from parley.storage.db import Conn
from parley.tools import current_call, tool

# The agent the chat page at `/` talks to unless told otherwise (gateway/static/page.js).
DEMO_AGENT_ID = "5f3c2a1e-7b8d-4e6f-9a0b-1c2d3e4f5a6b"
DEMO_WIDGET = agent_widget.WidgetProfile(
    greeting="Hi! I'm the demo assistant. Ask me about returns, shipping, payments or"
    " warranties, or ask me for a refund.",
    starters=[
        "How do returns work?",
        "Order ORD-1234 arrived damaged, can I get a refund?",
        "What does the warranty cover?",
    ],
)


@tool(
    write=True,
    label="Refund",
    describe=lambda a: (
        f"Issue a refund for order {a['order_id']}"
        + (f" ({a['reason']})" if a.get("reason") else "")
    ),
)
async def issue_refund(order_id: str, reason: str | None = None) -> dict:
    """Refund an order to the customer's original payment method.

    Before calling this, check the return policy (returns are accepted within 17 days of
    delivery) and confirm the order id with the customer. A person approves every refund
    before it is issued.
    """
    call = current_call()
    assert call.connection is not None, "issue_refund runs as an approved write"
    refund_id = await demo_refunds.record(
        call.connection, order_id=order_id, reason=reason, call_key=call.call_key
    )
    return {"refund_id": refund_id, "order_id": order_id, "status": "refunded"}


async def seed_knowledge(conn: Conn, org_id: str, embedder: Embedder | None = None) -> Summary:
    """Ingest the demo policy documents (public), skipping any that are unchanged."""
    folder = Path(str(resources.files("parley") / "demo_knowledge"))
    return await ingest_files(
        conn, discover([folder]), org_id=org_id, access=Access(public=True), embedder=embedder
    )


async def seed_widget(conn: Conn, org_id: str) -> None:
    """Give the chat page's agent a greeting and starter questions, unless an operator
    registered that agent already (then its settings stay)."""
    if (await sessions.get_agent(conn, DEMO_AGENT_ID, org_id)).registered:
        return
    async with conn.transaction():
        await sessions.upsert_agent(
            conn, DEMO_AGENT_ID, name=sessions.DEFAULT_AGENT_NAME, org_id=org_id
        )
        await agent_widget.set_profile(conn, DEMO_AGENT_ID, DEMO_WIDGET)
