"""Tools the turn tests call (imported through PARLEY_TOOL_MODULES, in-process or not)."""

from __future__ import annotations

from parley.tools import register, tool


@tool
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
