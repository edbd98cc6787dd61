"""The rules of each rich interaction kind, without a stack: how the model's arguments become
the question a client renders, and which answers are accepted, with PROTOCOL.md's messages."""

from __future__ import annotations

from typing import Any

import pytest

from parley.interactions.catalog import BY_NAME, BY_TOOL, RAISE_TOOLS
from parley.interactions.choices import CHOICES
from parley.interactions.identity import IDENTITY_INTAKE
from parley.interactions.kinds import FieldError, InvalidQuestion
from parley.skills import BUILT_IN_TOOLS

REQUIRED = "this field is required"
BAD_EMAIL = "must be a valid email address"
BAD_PHONE = "must be a valid phone number (include your country code, e.g. +1 555 123 4567)"
NOTHING = "provide at least one of name/email/phone, or declined=true"


def test_the_catalog() -> None:
    assert set(RAISE_TOOLS) == {"request_identity_intake", "request_choices"}
    assert BY_TOOL["request_identity_intake"] is BY_NAME["identity_intake"] is IDENTITY_INTAKE
    assert BY_TOOL["request_choices"] is BY_NAME["choices"] is CHOICES
    assert (IDENTITY_INTAKE.capability, CHOICES.capability) == ("identity_form", "choice_chips")
    assert RAISE_TOOLS <= BUILT_IN_TOOLS  # no skill takes them away


# -- identity_intake ----------------------------------------------------------------------


def identity_spec(*fields: Any) -> dict[str, Any]:
    return IDENTITY_INTAKE.question({"fields": list(fields), "reason": "r"}).spec


def test_identity_fields_are_required_unless_said_otherwise() -> None:
    question = IDENTITY_INTAKE.question(
        {
            "fields": ["email", {"key": "phone", "required": False, "label": "Mobile"}],
            "reason": "to send you the quote",
        }
    )
    assert question.reason == "to send you the quote"
    assert question.spec == {
        "fields": [
            {"key": "email", "required": True},
            {"key": "phone", "required": False, "label": "Mobile"},
        ]
    }


@pytest.mark.parametrize(
    "arguments",
    [
        {"fields": [], "reason": "r"},
        {"fields": ["address"], "reason": "r"},
        {"fields": ["email"]},
        {"fields": ["email", {"key": "email"}], "reason": "r"},
        {"fields": [{"key": "name", "colour": "red"}], "reason": "r"},
    ],
    ids=["no-fields", "unknown-key", "no-reason", "asked-twice", "extra-property"],
)
def test_identity_arguments_that_ask_nothing(arguments: dict[str, Any]) -> None:
    with pytest.raises(InvalidQuestion):
        IDENTITY_INTAKE.question(arguments)


def test_identity_values_accepted_and_cleaned() -> None:
    spec = identity_spec("name", "email", {"key": "phone", "required": False})
    accepted, errors = IDENTITY_INTAKE.validate(
        spec,
        {"name": "  Ada Lovelace ", "email": "ada@example.co.uk", "phone": "+1 (555) 123-4567"},
    )
    assert errors == []
    assert accepted == {
        "name": "Ada Lovelace",
        "email": "ada@example.co.uk",
        "phone": "+15551234567",
    }
    # A field the form did not ask for is not taken.
    accepted, _ = IDENTITY_INTAKE.validate(
        identity_spec("email"), {"email": "a@b.io", "phone": "x"}
    )
    assert accepted == {"email": "a@b.io"}


@pytest.mark.parametrize(
    ("values", "errors"),
    [
        ({"email": "  "}, [FieldError("email", REQUIRED)]),
        ({"email": "ada@"}, [FieldError("email", BAD_EMAIL)]),
        ({"email": "ada example@x.com"}, [FieldError("email", BAD_EMAIL)]),
        ({"email": "ada@localhost"}, [FieldError("email", BAD_EMAIL)]),
        ({"email": "a@b.io", "phone": "555 1234"}, [FieldError("phone", BAD_PHONE)]),
        ({"email": "a@b.io", "phone": "+0 555 123 4567"}, [FieldError("phone", BAD_PHONE)]),
        ({"email": "a@b.io", "phone": "+1 555 123 4567 8901 23"}, [FieldError("phone", BAD_PHONE)]),
        ({"email": 42}, [FieldError("email", "must be text")]),
        ({"email": "x" * 250 + "@b.io"}, [FieldError("email", "must be at most 254 characters")]),
    ],
    ids=[
        "blank",
        "no-domain",
        "space",
        "no-dot",
        "no-country-code",
        "country-code-0",
        "too-long-phone",
        "not-text",
        "too-long",
    ],
)
def test_identity_rules(values: dict[str, Any], errors: list[FieldError]) -> None:
    spec = identity_spec("email", {"key": "phone", "required": False})
    assert IDENTITY_INTAKE.validate(spec, values)[1] == errors


def test_identity_with_nothing_given() -> None:
    optional = identity_spec(*({"key": k, "required": False} for k in ("name", "email", "phone")))
    assert IDENTITY_INTAKE.validate(optional, {})[1] == [FieldError("values", NOTHING)]
    assert IDENTITY_INTAKE.validate(optional, {"name": " "})[1] == [FieldError("values", NOTHING)]
    # Required fields left blank are named one by one instead.
    both = identity_spec("name", "email")
    assert IDENTITY_INTAKE.validate(both, {})[1] == [
        FieldError("name", REQUIRED),
        FieldError("email", REQUIRED),
    ]


# -- choices ------------------------------------------------------------------------------

PLAN = {
    "question": "Which plan?",
    "header": "Plan",
    "options": [{"label": "Basic"}, {"label": "Pro", "description": "For teams"}],
}
ADDONS = {
    "question": "Any add-ons?",
    "header": "Add-ons",
    "options": [{"label": "Backup"}, {"label": "Support"}, {"label": "Audit"}],
    "multiSelect": True,
}


def choices_spec(*questions: dict[str, Any]) -> dict[str, Any]:
    return CHOICES.question({"questions": list(questions), "reason": "r"}).spec


def test_choices_spec() -> None:
    spec = choices_spec(PLAN, ADDONS)
    assert spec == {"questions": [{**PLAN, "multiSelect": False}, ADDONS]}


@pytest.mark.parametrize(
    "questions",
    [
        [],
        [PLAN] * 2,
        [{**PLAN, "header": "A header that is too long"}],
        [{**PLAN, "options": [{"label": "Only one"}]}],
        [{**PLAN, "options": [{"label": f"o{i}"} for i in range(5)]}],
        [{**PLAN, "options": [{"label": "Same"}, {"label": "Same"}]}],
        [{**PLAN, "header": f"Q{i}"} for i in range(5)],
    ],
    ids=["none", "same-header", "long-header", "one-option", "five-options", "same-label", "five"],
)
def test_choices_arguments_that_ask_nothing(questions: list[dict[str, Any]]) -> None:
    with pytest.raises(InvalidQuestion):
        CHOICES.question({"questions": questions, "reason": "r"})


def test_choices_answers_accepted() -> None:
    spec = choices_spec(PLAN, ADDONS)
    accepted, errors = CHOICES.validate(
        spec,
        {
            "answers": [
                {"header": "Add-ons", "options": ["Audit", "Backup", "Audit"]},
                {"header": "Plan", "other": " Enterprise "},
            ]
        },
    )
    assert errors == []
    # In the questions' order; options in the offered order, once; other trimmed.
    assert accepted == {
        "answers": [
            {"header": "Plan", "options": [], "other": "Enterprise"},
            {"header": "Add-ons", "options": ["Backup", "Audit"]},
        ]
    }


@pytest.mark.parametrize(
    ("answers", "errors"),
    [
        (
            [{"header": "Plan", "options": ["Basic"]}],
            [("Add-ons", "this question must be answered")],
        ),
        (
            [{"header": "Plan", "options": ["Gold"]}, {"header": "Add-ons", "options": ["Audit"]}],
            [("Plan", "'Gold' is not one of the offered options")],
        ),
        (
            [{"header": "Plan", "options": []}, {"header": "Add-ons", "other": "  "}],
            [
                ("Plan", "select an option or provide an 'other' answer"),
                ("Add-ons", "select an option or provide an 'other' answer"),
            ],
        ),
        (
            [
                {"header": "Plan", "options": ["Basic", "Pro"]},
                {"header": "Add-ons", "options": ["Audit"]},
            ],
            [("Plan", "this question takes a single answer")],
        ),
        (
            [
                {"header": "Plan", "options": ["Basic"], "other": "and more"},
                {"header": "Add-ons", "options": ["Audit"], "other": "and more"},
            ],
            [("Plan", "this question takes a single answer")],
        ),
        (
            [
                {"header": "Plan", "options": ["Basic"]},
                {"header": "Plan", "options": ["Pro"]},
                {"header": "Add-ons", "options": ["Audit"]},
            ],
            [("Plan", "this question is answered twice")],
        ),
        (
            [
                {"header": "Colour", "options": ["Red"]},
                {"header": "Plan", "options": ["Pro"]},
                {"header": "Add-ons", "options": ["Audit"]},
            ],
            [("Colour", "there is no question with this header")],
        ),
    ],
    ids=["unanswered", "not-offered", "empty", "single", "single-with-other", "twice", "unknown"],
)
def test_choices_rules(answers: list[dict[str, Any]], errors: list[tuple[str, str]]) -> None:
    spec = choices_spec(PLAN, ADDONS)
    got = CHOICES.validate(spec, {"answers": answers})[1]
    assert [(e.field, e.message) for e in got] == errors


def test_choices_shapes() -> None:
    spec = choices_spec(PLAN)
    assert CHOICES.validate(spec, {})[1] == [FieldError("Plan", "this question must be answered")]
    bad_list = CHOICES.validate(spec, {"answers": "Basic"})[1]
    assert [e.field for e in bad_list] == ["answers"]
    not_labels = CHOICES.validate(spec, {"answers": [{"header": "Plan", "options": [1]}]})[1]
    assert not_labels == [FieldError("Plan", "'options' must be a list of option labels")]


def test_in_words_for_a_client_without_forms() -> None:
    identity = IDENTITY_INTAKE.question(
        {"fields": ["email", {"key": "phone", "required": False}], "reason": "to call you back"}
    )
    assert IDENTITY_INTAKE.in_words(identity) == (
        "their email address, phone number (optional) (to call you back)"
    )
    choices = CHOICES.question({"questions": [PLAN], "reason": "to price it"})
    assert CHOICES.in_words(choices) == "Which plan? (options: Basic, Pro) (to price it)"
