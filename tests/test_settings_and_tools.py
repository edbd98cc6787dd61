"""Configuration parsing and the tool API, without any server."""

from __future__ import annotations

from datetime import timedelta

import pytest

from parley.settings import Settings, parse_duration
from parley.tools import ToolArgumentsError, ToolRegistry


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("24h", 86400), ("1.5h", 5400), ("250ms", 0.25), ("42", 42)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("bad", ["", "soon", "-5m", "0s", "10 parsecs"])
def test_bad_durations(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_env_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_TOOL_MODULES", "shop.tools, crm.tools,")
    monkeypatch.setenv("PARLEY_CONFIRM_TOOLS", "refund,delete")
    monkeypatch.setenv("PARLEY_APPROVAL_TIMEOUT", "15m")
    monkeypatch.setenv("PARLEY_PORT", "9000")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-secret")
    settings = Settings()
    assert settings.tool_modules == ["shop.tools", "crm.tools"]
    assert settings.confirm_tools == ["refund", "delete"]
    assert settings.approval_timeout == timedelta(minutes=15)
    assert settings.interaction_timeout is None  # unset: the approval timeout
    monkeypatch.setenv("PARLEY_INTERACTION_TIMEOUT", "2h")
    monkeypatch.setenv("PARLEY_INTERACTION_MAX_INVALID", "5")
    interactions = Settings()
    assert interactions.interaction_timeout == timedelta(hours=2)
    assert interactions.interaction_max_invalid == 5
    assert settings.port == 9000
    assert settings.has_model_key and "sk-secret" not in repr(settings)


def test_decorated_tool_schema_and_validation() -> None:
    registry = ToolRegistry()

    @registry.tool
    def refund(order_id: str, amount: float, reason: str | None = None) -> str:
        """Refund part of an order."""
        return f"{order_id}:{amount}:{reason}"

    tool = registry.get("refund")
    assert tool is not None and tool.description == "Refund part of an order."
    spec = tool.spec()
    assert spec["input_schema"]["required"] == ["order_id", "amount"]
    assert spec["input_schema"]["properties"]["amount"] == {"type": "number"}
    tool.validate({"order_id": "A", "amount": 2})
    with pytest.raises(ToolArgumentsError, match="amount"):
        tool.validate({"order_id": "A", "amount": "lots"})
    with pytest.raises(ToolArgumentsError, match="order_id"):
        tool.validate({"amount": 1})


async def test_handlers_sync_and_async_and_write_flags() -> None:
    registry = ToolRegistry()

    @registry.tool(write=True, describe=lambda a: f"Delete contact {a['email']}")
    async def delete_contact(email: str) -> dict:
        """Delete a CRM contact."""
        return {"deleted": email}

    registry.register(
        "double",
        "Double a number.",
        {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
        handler=lambda args: args["n"] * 2,
    )
    assert await registry.get("double").invoke({"n": 21}) == 42
    assert await registry.get("delete_contact").invoke({"email": "a@b.c"}) == {"deleted": "a@b.c"}
    assert registry.get("delete_contact").action_description({"email": "a@b.c"}) == (
        "Delete contact a@b.c"
    )
    assert registry.get("double").action_description({"n": 2}) == "Run double with n=2"
    assert registry.is_write("delete_contact", [])
    assert not registry.is_write("double", [])
    assert registry.is_write("double", ["dou"])
    with pytest.raises(ValueError, match="object"):
        registry.register("bad", "x", {"type": "string"}, handler=lambda a: a)


def test_unregistered_agents_are_refused_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """`parley gateway` (and plain uvicorn) refuse agents never registered; only `parley dev`
    turns that off for its children."""
    monkeypatch.delenv("PARLEY_WIDGET_AUTH_STRICT", raising=False)
    monkeypatch.delenv("parley_widget_auth_strict", raising=False)
    assert Settings().widget_auth_strict is True
