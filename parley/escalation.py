"""The built-in `escalate_to_human` tool: the agent hands the conversation to a person.

It marks the turn's conversation as escalated in PostgreSQL (the human team's queue,
`GET /admin/escalations`) and tells the model a person will follow up. The turn then ends
as usual, and its `eventual_response` carries `needsEscalation`, `escalationReason` and
`resolutionStatus: "requires_escalation"` (the turn's last step reads the mark back).
Read-only as far as approvals go: asking for a person needs nobody's approval.
"""

from __future__ import annotations

from typing import Any

from parley.storage import escalations
from parley.tools import ToolRegistry, current_call

NAME = "escalate_to_human"
MAX_REASON = 1000

PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "reason": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_REASON,
            "description": "Why a person is needed, in one or two sentences, for the support"
            " team that picks the conversation up.",
        },
    },
    "required": ["reason"],
}

FOLLOW_UP = (
    "The conversation is now with the human support team: a person will follow up with the"
    " customer. Tell the customer so, briefly, without promising a time."
)


def register_escalation(registry: ToolRegistry) -> None:
    async def handler(args: dict[str, Any]) -> Any:
        call = current_call()
        assert call.connection is not None
        escalated = await escalations.escalate(call.connection, call.turn_id, args["reason"])
        if escalated is None:
            raise LookupError("this conversation could not be found")
        return {"status": "escalated", "message": FOLLOW_UP}

    registry.register(
        NAME,
        "Hand this conversation to a human support agent, who will follow up with the customer."
        " Use it when the customer asks for a person, or when their request needs one: you"
        " cannot resolve it with your tools and knowledge, or it needs a human decision.",
        PARAMETERS,
        handler,
        label="Hand-off to our team",
    )
