"""The tool API: what the model may call, declared by operators and by the demo.

Two ways in, one registry:

    from parley.tools import tool, register

    @tool
    def order_status(order_id: str) -> dict:
        \"\"\"Look up an order's shipping status.\"\"\"
        ...

    @tool(write=True, label="Refund",
          describe=lambda a: f"Issue a refund for order {a['order_id']}")
    async def issue_refund(order_id: str, reason: str | None = None) -> str: ...

    @tool(write=True, approvers=["support", "manager"])   # a team member decides
    async def refund_large(order_id: str, amount: float) -> str: ...

    register("weather", "Current weather for a city.",
             {"type": "object", "properties": {"city": {"type": "string"}},
              "required": ["city"]},
             handler=lambda args: {"city": args["city"], "sky": "clear"})

Arguments are validated against the JSON schema before a handler runs. `write=True` marks a
tool whose calls wait for a person's approval; `approvers` says whose: `"visitor"` (the
person in the chat, the default) and/or roles a principal's token carries (they decide at
the approvals desk, `GET /api/approvals`). `label=` is what customers see of the tool in
the chat widget (e.g. "Order lookup"); a tool without one shows there only as "Working on
it…", and its name, arguments and result only in the widget's debug mode.
`PARLEY_TOOL_MODULES` lists modules the worker imports at start-up so their decorators run.

An approved write runs at most once per tool call. While it runs, `current_call()` gives
its `call_key` (workflow id + tool call id: pass it as the idempotency key to an outside
system) and, for async handlers, the `connection` of the transaction that records the
execution: what the handler writes through it commits together with that record, so a
crash mid-way rolls both back and the retry runs it exactly once.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import jsonschema
from pydantic import BaseModel, create_model

from parley.attachments import File
from parley.storage import attachments
from parley.storage.db import Conn
from parley.storage.visitors import Identity as Identity  # re-exported: the tool API

Handler = Callable[[dict[str, Any]], Any]
Describer = Callable[[dict[str, Any]], str]

VISITOR = "visitor"  # the approver who is the person in the chat
MAX_APPROVERS = 20
MAX_APPROVER = 128
# The sentence a visitor sees when a team member must decide on their request.
TEAM_SENTENCE = "Waiting for a team member to approve: {sentence}"
MAX_LABEL = 80


class ToolArgumentsError(ValueError):
    """The model's arguments do not match the tool's schema."""


@dataclass(frozen=True)
class CallContext:
    """What a running tool may know about its call.

    `call_key` is unique per tool call (workflow id + tool call id). `connection` is a
    database connection; for an approved write it is the transaction that also records the
    execution. `org_id` and `user_id` name the requester (`user_id` None: anonymous).
    `files` are the files the person sent with the message this turn answers (never shown
    to the model); `conversation_files()` lists those of earlier messages too. `identity`
    is what the visitor told us about themselves (the identity form, or the session's
    `userName` / `userEmail`).
    """

    call_key: str
    connection: Conn | None = None
    turn_id: str = ""
    org_id: str = ""
    user_id: str | None = None
    groups: list[str] | None = None  # from the principal's token; None: the admin-set ones
    files: tuple[File, ...] = ()
    identity: Identity = field(default_factory=Identity)

    async def conversation_files(self) -> list[File]:
        """The files sent with this conversation's messages, oldest first, up to and
        including this turn's (the newest 50)."""
        if self.connection is None:
            return list(self.files)
        return await attachments.conversation_files(self.connection, self.turn_id)


_current: ContextVar[CallContext | None] = ContextVar("parley_tool_call", default=None)


def current_call() -> CallContext:
    """The call being executed (raises outside a tool handler)."""
    ctx = _current.get()
    if ctx is None:
        raise RuntimeError("current_call() is only available inside a tool handler")
    return ctx


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    handler: Handler
    write: bool = False
    describe: Describer | None = None
    label: str | None = None  # what customers see of it in the chat widget
    approvers: tuple[str, ...] = (VISITOR,)
    approval_timeout: timedelta | None = None  # None: PARLEY_APPROVAL_TIMEOUT

    @property
    def visitor_approves(self) -> bool:
        return VISITOR in self.approvers

    def spec(self) -> dict[str, Any]:
        """The tool as the Anthropic Messages API declares it."""
        return {"name": self.name, "description": self.description, "input_schema": self.parameters}

    def validate(self, arguments: dict[str, Any]) -> None:
        try:
            jsonschema.validate(arguments, self.parameters)
        except jsonschema.ValidationError as err:
            where = "/".join(str(p) for p in err.absolute_path)
            raise ToolArgumentsError(f"{where + ': ' if where else ''}{err.message}") from None

    async def invoke(self, arguments: dict[str, Any], context: CallContext | None = None) -> Any:
        """Validate, then run the handler (a sync handler runs in a thread)."""
        self.validate(arguments)
        token = _current.set(context)
        try:
            if inspect.iscoroutinefunction(self.handler):
                return await self.handler(arguments)
            result = await asyncio.to_thread(self.handler, arguments)
            if inspect.isawaitable(result):
                result = await result
            return result
        finally:
            _current.reset(token)

    def action_description(self, arguments: dict[str, Any]) -> str:
        """A sentence a person can approve or decline."""
        if self.describe is not None:
            return self.describe(arguments)
        return default_description(self.name, arguments)


def approvers_of(name: str, approvers: list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """A tool's approvers, checked: 1 to 20 distinct non-blank names (default the visitor)."""
    if approvers is None:
        return (VISITOR,)
    if isinstance(approvers, str):
        raise TypeError(f"tool {name}: approvers is a list of names, not a string")
    names = tuple(dict.fromkeys(approvers))
    if not names or len(names) > MAX_APPROVERS:
        raise ValueError(f"tool {name}: approvers must name 1 to {MAX_APPROVERS} approvers")
    for approver in names:
        if not isinstance(approver, str) or not approver.strip() or len(approver) > MAX_APPROVER:
            raise ValueError(f"tool {name}: an approver is a role name of 1 to {MAX_APPROVER}")
    return names


MAX_APPROVAL_TIMEOUT = timedelta(days=30)


def timeout_of(name: str, timeout: timedelta | float | None) -> timedelta | None:
    """A tool's approval timeout, checked: more than 0, at most 30 days."""
    if timeout is None:
        return None
    value = timeout if isinstance(timeout, timedelta) else timedelta(seconds=timeout)
    if not timedelta(0) < value <= MAX_APPROVAL_TIMEOUT:
        raise ValueError(f"tool {name}: approval_timeout must be more than 0 and at most 30 days")
    return value


def default_description(name: str, arguments: dict[str, Any]) -> str:
    shown = ", ".join(f"{k}={v!r}" for k, v in arguments.items()) or "no arguments"
    return f"Run {name} with {shown}"


def schema_from_signature(fn: Callable[..., Any]) -> dict[str, Any]:
    """A JSON schema for `fn`'s parameters, from its type hints (via pydantic)."""
    fields: dict[str, Any] = {}
    for name, param in inspect.signature(fn).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"tool {fn.__name__}: *args/**kwargs cannot be described to a model")
        annotation = Any if param.annotation is inspect.Parameter.empty else param.annotation
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[name] = (annotation, default)
    model: type[BaseModel] = create_model(f"{fn.__name__}_args", **fields)
    schema = model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    return schema


class ToolRegistry:
    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}

    def register(
        self,
        name: str,
        description: str,
        parameters: dict[str, Any],
        handler: Handler,
        *,
        write: bool = False,
        describe: Describer | None = None,
        approvers: list[str] | tuple[str, ...] | None = None,
        approval_timeout: timedelta | float | None = None,
        label: str | None = None,
    ) -> Tool:
        """Add a tool defined from data; `handler` takes the arguments dict. `approvers`:
        who may approve its calls (`"visitor"` and/or role names; default the visitor);
        `approval_timeout` (a timedelta or seconds): how long its approvals wait (default
        `PARLEY_APPROVAL_TIMEOUT`)."""
        jsonschema.Draft202012Validator.check_schema(parameters)
        if parameters.get("type") != "object":
            raise ValueError(f"tool {name}: parameters must be a JSON schema of type 'object'")
        if label is not None and not (0 < len(label.strip()) <= MAX_LABEL):
            raise ValueError(f"tool {name}: a label has 1 to {MAX_LABEL} characters")
        tool = Tool(
            name,
            description,
            parameters,
            handler,
            write,
            describe,
            label,
            approvers_of(name, approvers),
            timeout_of(name, approval_timeout),
        )
        self._tools[name] = tool
        return tool

    def tool(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        write: bool = False,
        describe: Describer | None = None,
        approvers: list[str] | tuple[str, ...] | None = None,
        approval_timeout: timedelta | float | None = None,
        label: str | None = None,
    ) -> Any:
        """Decorator: the function's name, docstring and hints become the tool."""

        def wrap(func: Callable[..., Any]) -> Callable[..., Any]:
            async def call_async(args: dict[str, Any]) -> Any:
                return await func(**args)

            def call(args: dict[str, Any]) -> Any:
                return func(**args)

            handler = call_async if inspect.iscoroutinefunction(func) else call

            self.register(
                name or func.__name__,
                inspect.getdoc(func) or func.__name__,
                schema_from_signature(func),
                handler,
                write=write,
                describe=describe,
                approvers=approvers,
                approval_timeout=approval_timeout,
                label=label,
            )
            return func

        return wrap(fn) if fn is not None else wrap

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def labels(self) -> dict[str, str | None]:
        """Each tool's customer-facing label (None: it has none)."""
        return {t.name: t.label for t in self._tools.values()}

    def all(self) -> list[Tool]:
        return list(self._tools.values())

    def unregister(self, name: str) -> None:
        self._tools.pop(name, None)

    def describe(self, name: str, arguments: dict[str, Any]) -> str:
        """The approval sentence for a call (of a registered tool or not)."""
        tool = self._tools.get(name)
        return tool.action_description(arguments) if tool else default_description(name, arguments)

    def approvers(self, name: str) -> tuple[str, ...]:
        """Who may approve a call of `name` (a write by pattern only: the visitor)."""
        tool = self._tools.get(name)
        return tool.approvers if tool is not None else (VISITOR,)

    def approval_timeout(self, name: str) -> timedelta | None:
        """How long a call of `name` waits for approval (None: the deployment's timeout)."""
        tool = self._tools.get(name)
        return tool.approval_timeout if tool is not None else None

    def is_write(self, name: str, confirm_patterns: list[str]) -> bool:
        """Declared a write, or named like one of `PARLEY_CONFIRM_TOOLS`' patterns."""
        tool = self._tools.get(name)
        return (tool is not None and tool.write) or any(p and p in name for p in confirm_patterns)


def load_modules(names: list[str]) -> None:
    """Import each module so its `@tool` / `register` calls run."""
    for module in names:
        importlib.import_module(module)


registry = ToolRegistry()
tool = registry.tool
register = registry.register
