"""The demo (`PARLEY_DEMO=1`): a refund tool that waits for a person, and a few policy
documents so answers come with citations out of the box.

The refund is recorded in `demo_refunds` through the tool call's own transaction, so it
commits together with the execution record: a double refund would be visible there, and
a crash mid-refund leaves neither behind.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from psycopg import AsyncConnection

from parley.knowledge.embeddings import Embedder
from parley.knowledge.ingest import Summary, discover, ingest_files
from parley.knowledge.types import Access
from parley.tools import current_call, tool


@tool(
    write=True,
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
    cur = await call.connection.execute(
        "insert into demo_refunds (order_id, reason, call_key) values (%s, %s, %s) returning id",
        (order_id, reason, call.call_key),
    )
    row = await cur.fetchone()
    assert row is not None
    return {"refund_id": row["id"], "order_id": order_id, "status": "refunded"}


async def seed_knowledge(
    conn: AsyncConnection, org_id: str, embedder: Embedder | None = None
) -> Summary:
    """Ingest the demo policy documents (public), skipping any that are unchanged."""
    folder = Path(str(resources.files("parley") / "demo_knowledge"))
    return await ingest_files(
        conn, discover([folder]), org_id=org_id, access=Access(public=True), embedder=embedder
    )
