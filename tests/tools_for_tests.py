"""Tools the turn tests call (imported through PARLEY_TOOL_MODULES, in-process or not)."""

from __future__ import annotations

from parley.tools import current_call, register, tool


@tool(label="Order lookup")
def order_status(order_id: str) -> dict:
    """Look up the shipping status of an order."""
    return {"order_id": order_id, "status": "shipped", "carrier": "DHL"}


@tool
def flaky_inventory(sku: str) -> str:
    """Check stock for a SKU (always fails, for the failing-tool test)."""
    raise RuntimeError(f"inventory service unreachable for {sku}")


register(
    "add_numbers",
    "Add two integers.",
    {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    },
    handler=lambda args: args["a"] + args["b"],
)


@tool
def delete_contact(email: str) -> str:
    """Delete a CRM contact (a write by name: PARLEY_CONFIRM_TOOLS has 'delete_')."""
    DELETED.append(email)
    return f"deleted {email}"


DELETED: list[str] = []
BLOCKING_REFUND_LOCK = 4242


@tool(write=True, describe=lambda a: f"Refund order {a['order_id']} slowly")
async def blocking_refund(order_id: str) -> dict:
    """Refund an order; waits on an advisory lock the crash test holds."""
    call = current_call()
    assert call.connection is not None
    await call.connection.execute(
        "insert into demo_refunds (order_id, reason, call_key) values (%s, 'blocking', %s)",
        (order_id, call.call_key),
    )
    await call.connection.execute("select pg_advisory_xact_lock(%s)", (BLOCKING_REFUND_LOCK,))
    return {"order_id": order_id, "status": "refunded"}


@tool
def raw_bytes_report() -> str:
    """Return a report straight from a legacy system (it holds a NUL, which PostgreSQL text
    cannot store: the data-error test)."""
    return "status: ok\x00trailing garbage"


async def model_key_for(org_id: str) -> str | None:
    """A per-organization model key resolver (PARLEY_MODEL_KEY_RESOLVER) for the tests:
    organizations named `keyless-*` have none."""
    return None if org_id.startswith("keyless-") else f"key-for-{org_id}"


# What `attached_files` saw: (turn id, this turn's files, the conversation's files).
SEEN_FILES: list[tuple[str, tuple, list]] = []


@tool
async def attached_files() -> dict:
    """Read the files the person attached (the test records what it saw; the model only
    gets how many there are)."""
    call = current_call()
    SEEN_FILES.append((call.turn_id, call.files, await call.conversation_files()))
    return {"files": len(call.files)}


@tool
def whoami() -> dict:
    """Tell who the visitor is, as far as they said (the identity-form test)."""
    identity = current_call().identity
    return {"name": identity.name, "email": identity.email, "phone": identity.phone}


async def _team_refund(args: dict) -> dict:
    call = current_call()
    assert call.connection is not None
    await call.connection.execute(
        "insert into demo_refunds (order_id, reason, call_key) values (%s, %s, %s)",
        (args["order_id"], f"team:{args['amount']}", call.call_key),
    )
    return {"order_id": args["order_id"], "refunded": args["amount"]}


# A refund a support team member approves at the desk (the desk tests).
register(
    "team_refund",
    "Refund part of an order.",
    {
        "type": "object",
        "properties": {
            "order_id": {"type": "string", "pattern": "^ORD-[0-9]+$"},
            "amount": {"type": "integer", "exclusiveMinimum": 0, "maximum": 500},
        },
        "required": ["order_id", "amount"],
        "additionalProperties": False,
    },
    handler=_team_refund,
    write=True,
    approvers=["support", "manager"],
    describe=lambda a: f"Refund {a['amount']} EUR on order {a['order_id']}",
)


@tool(write=True, approvers=["visitor", "manager"])
def shared_cancel(order_id: str) -> str:
    """Cancel an order: the visitor or a manager may approve it."""
    return f"cancelled {order_id}"


# A team-approved write whose approvals wait 2 s only (the desk's deadline tests).
register(
    "hasty_refund",
    "Refund an order, if someone approves it quickly.",
    {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
    handler=lambda args: {"order_id": args["order_id"], "refunded": True},
    write=True,
    approvers=["support"],
    approval_timeout=2,
)


# The same with 6 s: longer than the gateways' reconciler takes to retell an extension.
register(
    "patient_refund",
    "Refund an order, if someone approves it within a few seconds.",
    {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
    handler=lambda args: {"order_id": args["order_id"], "refunded": True},
    write=True,
    approvers=["support"],
    approval_timeout=6,
)
