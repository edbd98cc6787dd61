"""`choices`: one to four multiple-choice questions, shown as chips.

Raised by `request_choices {questions, reason}`; rendered by clients that support
`choice_chips`. An answer picks offered options by label and/or writes an `other` answer;
errors are keyed by the question's `header`.
"""

from __future__ import annotations

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

MAX_HEADER = 12
MAX_OTHER = 500

UNANSWERED = "this question must be answered"
EMPTY = "select an option or provide an 'other' answer"
SINGLE = "this question takes a single answer"
NOT_OFFERED = "'{}' is not one of the offered options"
NO_SUCH_QUESTION = "there is no question with this header"
TWICE = "this question is answered twice"
BAD_ANSWERS = "must be a list of answers, each with the 'header' of its question"
BAD_OPTIONS = "'options' must be a list of option labels"
BAD_OTHER = f"'other' must be text of at most {MAX_OTHER} characters"

PARAMETERS = raise_parameters(
    "questions",
    {
        "type": "array",
        "minItems": 1,
        "maxItems": 4,
        "items": {
            "type": "object",
            "properties": {
                "question": {"type": "string", "minLength": 1, "maxLength": 300},
                "header": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_HEADER,
                    "description": "A short label for the question, unique among them.",
                },
                "options": {
                    "type": "array",
                    "minItems": 2,
                    "maxItems": 4,
                    "items": {
                        "type": "object",
                        "properties": {
                            "label": {"type": "string", "minLength": 1, "maxLength": 80},
                            "description": {"type": "string", "maxLength": 200},
                        },
                        "required": ["label"],
                        "additionalProperties": False,
                    },
                },
                "multiSelect": {
                    "type": "boolean",
                    "description": "Whether several options may be picked (default false).",
                },
            },
            "required": ["question", "header", "options"],
            "additionalProperties": False,
        },
    },
    "above the questions",
)

DESCRIPTION = (
    "Ask the visitor one to four multiple-choice questions, shown as buttons in the chat"
    " (2-4 options each; they may also write their own answer). Use it when the answer is one"
    " of a few known options." + RESULT_NOTE
)


def build(arguments: dict[str, Any]) -> Question:
    questions: list[dict[str, Any]] = []
    for item in arguments["questions"]:
        header = item["header"]
        if any(q["header"] == header for q in questions):
            raise InvalidQuestion(f"questions: the header '{header}' is used twice")
        labels = [o["label"] for o in item["options"]]
        if len(set(labels)) != len(labels):
            raise InvalidQuestion(f"questions: '{header}' offers an option twice")
        questions.append({"multiSelect": False, **item})
    return Question({"questions": questions}, arguments["reason"])


def check(spec: dict[str, Any], values: Values) -> tuple[Values, list[FieldError]]:
    answers = values.get("answers", [])
    if not isinstance(answers, list):
        return {}, [FieldError("answers", BAD_ANSWERS)]
    questions = {q["header"]: q for q in spec["questions"]}
    given: dict[str, dict[str, Any]] = {}
    errors: list[FieldError] = []
    for answer in answers:
        header = answer.get("header") if isinstance(answer, dict) else None
        if not isinstance(header, str):
            errors.append(FieldError("answers", BAD_ANSWERS))
        elif header not in questions:
            errors.append(FieldError(clip(header), NO_SUCH_QUESTION))
        elif header in given:
            errors.append(FieldError(header, TWICE))
        else:
            given[header] = answer
    accepted: list[dict[str, Any]] = []
    for header, question in questions.items():
        answer = given.get(header)
        if answer is None:
            if not any(e.field == header for e in errors):
                errors.append(FieldError(header, UNANSWERED))
            continue
        picked, problem = _picked(question, answer)
        if problem is not None:
            errors.append(FieldError(header, problem))
        else:
            accepted.append(picked)
    return {"answers": accepted}, errors


def _picked(question: dict[str, Any], answer: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """One question's answer as accepted, or what is wrong with it."""
    options = answer.get("options") or []
    other = text_field(answer.get("other"))
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        return {}, BAD_OPTIONS
    if other is not None and (not isinstance(other, str) or len(other) > MAX_OTHER):
        return {}, BAD_OTHER
    offered = [o["label"] for o in question["options"]]
    for label in options:
        if label not in offered:
            return {}, NOT_OFFERED.format(clip(label))
    picked = [label for label in offered if label in options]  # in the offered order, once
    if not picked and other is None:
        return {}, EMPTY
    if not question["multiSelect"] and len(picked) + (other is not None) > 1:
        return {}, SINGLE
    accepted: dict[str, Any] = {"header": question["header"], "options": picked}
    if other is not None:
        accepted["other"] = other
    return accepted, None


def in_words(question: Question) -> str:
    asked = "; ".join(
        f"{clip(q['question'], 300)} (options: {', '.join(o['label'] for o in q['options'])}"
        + (", several allowed)" if q["multiSelect"] else ")")
        for q in question.spec["questions"]
    )
    return f"{asked} ({question.reason})"


CHOICES = Kind(
    name="choices",
    capability="choice_chips",
    tool="request_choices",
    description=DESCRIPTION,
    parameters=PARAMETERS,
    build=build,
    check=check,
    in_words=in_words,
)
