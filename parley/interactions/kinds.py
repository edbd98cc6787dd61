"""What a kind of rich interaction is: its raise tool, the capability that lets a client render
it, how the model's arguments become the question the client shows, and how a visitor's
answer is checked.

Each kind lives in a module of its own (`identity`, `choices`); `catalog` lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jsonschema

from parley.tools import ToolArgumentsError

Values = dict[str, Any]


@dataclass(frozen=True)
class FieldError:
    """One problem with a submitted answer, keyed as the client shows it (a field's key, a
    question's header, or `values` for the whole answer)."""

    field: str
    message: str


class InvalidQuestion(ToolArgumentsError):
    """The raise tool's arguments do not make a question a client can render (the model reads
    it as invalid arguments)."""


@dataclass(frozen=True)
class Question:
    """What the client renders (`spec`) and the agent's reason for asking."""

    spec: dict[str, Any]
    reason: str


@dataclass(frozen=True)
class Kind:
    name: str  # the wire's `kind`
    capability: str  # what a client lists in `supports` to render it
    tool: str  # the built-in raise tool the model calls
    description: str  # the tool's description, for the model
    parameters: dict[str, Any]  # the tool's JSON schema
    build: Callable[[dict[str, Any]], Question]  # valid arguments -> the question
    check: Callable[[dict[str, Any], Values], tuple[Values, list[FieldError]]]
    in_words: Callable[[Question], str]  # the question, to ask in plain conversation

    def question(self, arguments: dict[str, Any]) -> Question:
        """The question the model's arguments ask; InvalidQuestion when they ask none."""
        try:
            jsonschema.validate(arguments, self.parameters)
        except jsonschema.ValidationError as err:
            where = "/".join(str(p) for p in err.absolute_path)
            raise InvalidQuestion(f"{where + ': ' if where else ''}{err.message}") from None
        return self.build(arguments)

    def validate(self, spec: dict[str, Any], values: Values) -> tuple[Values, list[FieldError]]:
        """The answer as accepted (cleaned), and every rule it breaks, once (none: accepted)."""
        accepted, errors = self.check(spec, values)
        return accepted, list(dict.fromkeys(errors))


# How every raise tool's description ends: what its result can say.
RESULT_NOTE = (
    " The result says whether they answered (with what they gave), declined (then do not ask"
    " for it again in this conversation) or did not respond."
)


def raise_parameters(name: str, question: dict[str, Any], reason_shown: str) -> dict[str, Any]:
    """A raise tool's JSON schema: the question under `name`, and why the agent asks."""
    return {
        "type": "object",
        "properties": {
            name: question,
            "reason": {
                "type": "string",
                "minLength": 1,
                "maxLength": 200,
                "description": f"Why you ask, shown {reason_shown}.",
            },
        },
        "required": [name, "reason"],
        "additionalProperties": False,
    }


def text_field(value: Any) -> Any:
    """A submitted text value, trimmed; None when blank or absent (not text: unchanged)."""
    if isinstance(value, str):
        return value.strip() or None
    return value


def clip(text: str, limit: int = 60) -> str:
    """A visitor's text, short enough to quote back in a message."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
