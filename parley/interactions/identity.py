"""`identity_intake`: a form for the visitor's name, email and phone.

Raised by `request_identity_intake {fields, reason}`; rendered by clients that support
`identity_form`. Accepted values are kept on the conversation's user participant
(`parley.storage.visitors`) and reach later tools as `current_call().identity`.
"""

from __future__ import annotations

import re
from typing import Any

from parley.interactions.kinds import (
    RESULT_NOTE,
    FieldError,
    InvalidQuestion,
    Kind,
    Question,
    Values,
    clip,
    raise_parameters,
    text_field,
)

KEYS = ("name", "email", "phone")
LABELS = {"name": "name", "email": "email address", "phone": "phone number"}
MAX_CHARS = {"name": 200, "email": 254, "phone": 32}

REQUIRED = "this field is required"
BAD_EMAIL = "must be a valid email address"
BAD_PHONE = "must be a valid phone number (include your country code, e.g. +1 555 123 4567)"
NOTHING = "provide at least one of name/email/phone, or declined=true"
NOT_TEXT = "must be text"

# Pragmatic, not RFC 5322: one @, no spaces or quoting in the local part, a dotted domain of
# letter/digit labels (any script) ending in a 2+ letter top-level label.
EMAIL = re.compile(r"[^\s@\"<>(),;:\\\[\]]{1,64}@(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+[^\W\d_]{2,63}")
# E.164: "+", a country code that does not start with 0, at most 15 digits in all. Spaces,
# dots, dashes and parentheses between digits are allowed on input and dropped.
E164 = re.compile(r"\+[1-9]\d{6,14}")
PHONE_SEPARATORS = re.compile(r"[\s.\-()]")

PARAMETERS = raise_parameters(
    "fields",
    {
        "type": "array",
        "minItems": 1,
        "maxItems": 3,
        "description": "What to ask for: each a key ('name', 'email' or 'phone'), or"
        " {key, required (default true), label}.",
        "items": {
            "anyOf": [
                {"type": "string", "enum": list(KEYS)},
                {
                    "type": "object",
                    "properties": {
                        "key": {"type": "string", "enum": list(KEYS)},
                        "required": {"type": "boolean"},
                        "label": {"type": "string", "minLength": 1, "maxLength": 80},
                    },
                    "required": ["key"],
                    "additionalProperties": False,
                },
            ]
        },
    },
    "above the form (e.g. 'to send you the quote')",
)

DESCRIPTION = (
    "Ask the visitor for their name, email address and/or phone number with a form in the"
    " chat. Use it when you need to identify or contact them (say, to send a quote or open a"
    " case)." + RESULT_NOTE
)


def build(arguments: dict[str, Any]) -> Question:
    fields: list[dict[str, Any]] = []
    for item in arguments["fields"]:
        field = {"key": item} if isinstance(item, str) else dict(item)
        if any(f["key"] == field["key"] for f in fields):
            raise InvalidQuestion(f"fields: '{field['key']}' is asked for twice")
        fields.append({"required": True, **field})
    return Question({"fields": fields}, arguments["reason"])


def normal_phone(text: str) -> str | None:
    """The number in E.164 (`+15551234567`), or None when it is not one."""
    digits = PHONE_SEPARATORS.sub("", text)
    return digits if E164.fullmatch(digits) else None


def check(spec: dict[str, Any], values: Values) -> tuple[Values, list[FieldError]]:
    accepted: Values = {}
    errors: list[FieldError] = []
    for field in spec["fields"]:
        key = field["key"]
        value = text_field(values.get(key))
        if value is None:
            if field["required"]:
                errors.append(FieldError(key, REQUIRED))
            continue
        problem = _problem(key, value)
        if problem is not None:
            errors.append(FieldError(key, problem))
        else:
            accepted[key] = normal_phone(value) if key == "phone" else value
    if not errors and not accepted:
        errors.append(FieldError("values", NOTHING))
    return accepted, errors


def _problem(key: str, value: Any) -> str | None:
    """What is wrong with one given value (None: nothing)."""
    if not isinstance(value, str):
        return NOT_TEXT
    if len(value) > MAX_CHARS[key]:
        return f"must be at most {MAX_CHARS[key]} characters"
    if key == "email" and not EMAIL.fullmatch(value):
        return BAD_EMAIL
    if key == "phone" and normal_phone(value) is None:
        return BAD_PHONE
    return None


def in_words(question: Question) -> str:
    wanted = [
        f"{clip(f.get('label') or LABELS[f['key']])}" + ("" if f["required"] else " (optional)")
        for f in question.spec["fields"]
    ]
    return f"their {', '.join(wanted)} ({question.reason})"


IDENTITY_INTAKE = Kind(
    name="identity_intake",
    capability="identity_form",
    tool="request_identity_intake",
    description=DESCRIPTION,
    parameters=PARAMETERS,
    build=build,
    check=check,
    in_words=in_words,
)
