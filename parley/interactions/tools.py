"""The built-in raise tools (`request_identity_intake`, `request_choices`), offered to the
model on every turn, and what each returns to it.

When the conversation's client can render the kind, the workflow parks the turn on the call
(it never reaches a handler) and the result reports the visitor's answer. When it cannot,
or the visitor declined this kind earlier in the conversation, the workflow runs the tool
like any other and the handler registered here answers at once. Either way the result is
`{status: submitted | declined | no_response, values?, message?}`, never an error; only
arguments that ask no question are.
"""

from __future__ import annotations

from typing import Any

from parley.interactions.catalog import KINDS
from parley.interactions.kinds import Kind
from parley.storage import interactions
from parley.tools import Handler, ToolRegistry, current_call

CANNOT_SHOW = (
    "The visitor's chat client cannot show this, so nothing was asked. If you still need it,"
    " ask them in plain conversation for {}."
)
DECLINED = (
    "The visitor declined to answer. Do not ask for this again in this conversation; carry on"
    " without it."
)
DECLINED_BEFORE = (
    "The visitor already declined this earlier in this conversation, so it was not asked"
    " again. Do not ask for it again; carry on without it."
)
NO_RESPONSE = (
    "The visitor did not answer in time and the question has closed. Carry on without it, or"
    " ask in plain conversation if you still need it."
)
STOPPED = "The conversation was stopped before the visitor answered."


def register_raise_tools(registry: ToolRegistry) -> None:
    for kind in KINDS:
        registry.register(kind.tool, kind.description, kind.parameters, _unparked(kind))


def _unparked(kind: Kind) -> Handler:
    """The raise tool's answer when the turn did not park on it."""

    async def handler(arguments: dict[str, Any]) -> dict[str, Any]:
        question = kind.question(arguments)  # InvalidQuestion: an error result, as it should
        call = current_call()
        if call.connection is not None and await interactions.declined_before(
            call.connection, call.turn_id, kind.name
        ):
            return {"status": "declined", "message": DECLINED_BEFORE}
        return {"status": "no_response", "message": CANNOT_SHOW.format(kind.in_words(question))}

    return handler


def result(outcome: interactions.Outcome) -> dict[str, Any]:
    """What the model reads once a parked question has ended."""
    match outcome.status:
        case "submitted":
            return {"status": "submitted", "values": outcome.answer or {}}
        case "declined":
            return {"status": "declined", "message": DECLINED}
        case "expired":
            return {"status": "no_response", "message": NO_RESPONSE}
        case "cancelled":
            return {"status": "no_response", "message": STOPPED}
