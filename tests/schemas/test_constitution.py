"""Constitution, Trait and OctTrait (docs/design.md §4: slugs, versions, first-person statements, strict
keys)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic_core import ErrorDetails

from charforge.schemas import Constitution, LocatedError, OctTrait, Trait
from charforge.schemas.constitution import duplicate_questions_across_traits, duplicate_trait_ids

ExpectError = Callable[..., ErrorDetails]


def trait(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": "curiosity",
        "statement": "I am curious about how things work.",
        "questions": ["What do you wonder about?", "Why is the sky blue?"],
    }
    data.update(overrides)
    return data


def constitution(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "warm-mentor",
        "version": "1",
        "description": "A patient, honest mentor.",
        "kind": "normative",
        "traits": [
            trait(),
            trait(
                id="honesty",
                statement="I'm honest even when it is awkward.",
                questions=["Is my business plan any good?", "Do I look tired?"],
            ),
        ],
    }
    data.update(overrides)
    return data


# --- good examples -------------------------------------------------------------------------------


def test_valid_constitution() -> None:
    model = Constitution.model_validate(constitution())
    assert model.name == "warm-mentor"
    assert [t.id for t in model.traits] == ["curiosity", "honesty"]
    assert model.traits[0].clarification is None


def test_valid_trait_with_clarification() -> None:
    model = Trait.model_validate(trait(clarification="Curiosity, not nosiness."))
    assert model.clarification == "Curiosity, not nosiness."


@pytest.mark.parametrize("kind", ["normative", "neutral", "control"])
def test_kind_literal_accepts(kind: str) -> None:
    assert Constitution.model_validate(constitution(kind=kind)).kind == kind


# --- slugs ---------------------------------------------------------------------------------------

GOOD_SLUGS = ["a", "7", "warm-mentor", "trait_2", "a" * 64]
BAD_SLUGS = ["", "../x", "a/b", "a\\b", "Warm", "warmMentor", "-a", "a-", "_a", "a b", "a.b", "a" * 65]


@pytest.mark.parametrize("slug", GOOD_SLUGS)
def test_slug_accepted(slug: str) -> None:
    assert Constitution.model_validate(constitution(name=slug)).name == slug
    assert Trait.model_validate(trait(id=slug)).id == slug


@pytest.mark.parametrize("slug", BAD_SLUGS)
def test_bad_name_slug(slug: str, expect_error: ExpectError) -> None:
    expect_error(Constitution, constitution(name=slug), ("name",), "is not a slug")


@pytest.mark.parametrize("slug", BAD_SLUGS)
def test_bad_trait_id_slug(slug: str, expect_error: ExpectError) -> None:
    data = constitution(traits=[trait(id=slug)])
    expect_error(Constitution, data, ("traits", 0, "id"), "is not a slug")


# --- version -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "stored"), [(2, "2"), ("1", "1"), ("1.2", "1.2"), ("1.2.3", "1.2.3")])
def test_version_accepted(raw: object, stored: str) -> None:
    assert Constitution.model_validate(constitution(version=raw)).version == stored


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (1.1, "write the version as a quoted string"),
        (1.0, "write the version as a quoted string"),
        ("v1", "is not a version"),
        ("1.2.3.4", "is not a version"),
        ("1.", "is not a version"),
        ("", "is not a version"),
        (True, "Input should be a valid string"),
    ],
)
def test_version_rejected(raw: object, fragment: str, expect_error: ExpectError) -> None:
    expect_error(Constitution, constitution(version=raw), ("version",), fragment)


def test_version_with_trailing_newline_rejected(expect_error: ExpectError) -> None:
    expect_error(Constitution, constitution(version="1.2\n"), ("version",), "is not a version")


# --- statement -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "I value honesty.",
        "I'm patient.",
        "I’ve learnt to listen.",
        "  I care.",
        "I\tcare.",
        "My goals are aligned with humanity's wellbeing.",
        "Even when discussing serious topics, I find room for humour.",
        "Honesty matters to me.",
    ],
)
def test_first_person_statement_accepted(statement: str) -> None:
    assert Trait.model_validate(trait(statement=statement)).statement == statement


@pytest.mark.parametrize(
    ("statement", "fragment"),
    [
        ("You are kind.", "first-person statement"),
        ("It is good to be kind.", "first-person statement"),
        ("i am kind.", "first-person statement"),
        ("Iam kind.", "first-person statement"),
        ("Ideas and memory matter; mystery too.", "first-person statement"),
        ("The assistant is kind.", "first-person statement"),
        ("   ", "must not be empty"),
    ],
)
def test_statement_rejected(statement: str, fragment: str, expect_error: ExpectError) -> None:
    data = constitution(traits=[trait(statement=statement)])
    expect_error(Constitution, data, ("traits", 0, "statement"), fragment)


# --- questions -----------------------------------------------------------------------------------


def test_questions_must_not_be_empty(expect_error: ExpectError) -> None:
    expect_error(Trait, trait(questions=[]), ("questions",), "at least 1 item")


@pytest.mark.parametrize("blank", ["", "   ", "\n"])
def test_blank_question_rejected(blank: str, expect_error: ExpectError) -> None:
    data = constitution(traits=[trait(questions=["Fine?", blank])])
    expect_error(Constitution, data, ("traits", 0, "questions", 1), "must not be empty")


@pytest.mark.parametrize("repeat", ["Why?", "  Why? "])
def test_duplicate_question_rejected(repeat: str, expect_error: ExpectError) -> None:
    data = constitution(traits=[trait(questions=["Why?", "How?", repeat])])
    error = expect_error(Constitution, data, ("traits", 0, "questions"), "duplicate question 'Why?'")
    located = error["ctx"]["error"]
    assert isinstance(located, LocatedError)
    assert located.loc == (2,)
    assert "first at index 0" in str(located)


def test_question_must_be_a_string(expect_error: ExpectError) -> None:
    expect_error(Trait, trait(questions=["Why?", 3]), ("questions", 1), "Input should be a valid string")


# --- other fields --------------------------------------------------------------------------------


def test_kind_literal_rejects(expect_error: ExpectError) -> None:
    expect_error(
        Constitution,
        constitution(kind="evil"),
        ("kind",),
        "Input should be 'normative', 'neutral' or 'control'",
    )


def test_traits_must_not_be_empty(expect_error: ExpectError) -> None:
    expect_error(Constitution, constitution(traits=[]), ("traits",), "at least 1 item")


def test_blank_description_rejected(expect_error: ExpectError) -> None:
    expect_error(Constitution, constitution(description=" "), ("description",), "must not be empty")


def test_blank_clarification_rejected(expect_error: ExpectError) -> None:
    expect_error(Trait, trait(clarification=""), ("clarification",), "must not be empty")


@pytest.mark.parametrize("field", ["name", "version", "description", "kind", "traits"])
def test_required_fields(field: str, expect_error: ExpectError) -> None:
    data = constitution()
    del data[field]
    expect_error(Constitution, data, (field,), "Field required")


@pytest.mark.parametrize(
    ("data", "loc"),
    [
        (constitution(tratis=[]), ("tratis",)),
        (constitution(traits=[trait(question=["typo"])]), ("traits", 0, "question")),
        (constitution(traits=[trait(), trait(id="honesty", weight=2)]), ("traits", 1, "weight")),
    ],
)
def test_unknown_keys_forbidden_at_every_level(
    data: dict[str, Any], loc: tuple, expect_error: ExpectError
) -> None:
    expect_error(Constitution, data, loc, "Extra inputs are not permitted")


# --- duplicate trait ids -------------------------------------------------------------------------


def test_duplicate_trait_id_is_located(expect_error: ExpectError) -> None:
    data = constitution(traits=[trait(), trait(id="honesty"), trait(id="curiosity", statement="I dig.")])
    error = expect_error(Constitution, data, (), "duplicate trait id 'curiosity'")
    located = error["ctx"]["error"]
    assert isinstance(located, LocatedError)
    assert located.loc == ("traits", 2, "id")
    assert "first at traits.0" in str(located)


def test_duplicate_trait_ids_on_raw_data_with_other_errors() -> None:
    # The model validator never runs when a field is invalid; the raw check still sees the repeat.
    data = constitution(
        version=1.5, traits=[trait(statement="You."), trait(), trait(id="x"), trait(id="x", questions=[])]
    )
    assert duplicate_trait_ids(data) == [
        (("traits", 1, "id"), "duplicate trait id 'curiosity' (first at traits.0)"),
        (("traits", 3, "id"), "duplicate trait id 'x' (first at traits.2)"),
    ]


@pytest.mark.parametrize(
    "data",
    [
        constitution(),
        {"traits": "not a list"},
        {"traits": [{"id": 1}, {"id": 1}, "junk", {"no_id": True}]},
        ["not", "a", "mapping"],
        None,
    ],
)
def test_duplicate_trait_ids_none_found(data: Any) -> None:
    assert duplicate_trait_ids(data) == []


# --- content hash --------------------------------------------------------------------------------


def test_sha256_is_hex_digest() -> None:
    digest = Constitution.model_validate(constitution()).sha256()
    assert len(digest) == 64
    assert set(digest) <= set("0123456789abcdef")


def test_sha256_ignores_key_order() -> None:
    data = constitution()
    reordered = {key: data[key] for key in reversed(list(data))}
    reordered["traits"] = [{key: t[key] for key in reversed(list(t))} for t in data["traits"]]
    assert Constitution.model_validate(data).sha256() == Constitution.model_validate(reordered).sha256()


def test_sha256_same_for_absent_and_none_clarification() -> None:
    absent = constitution(traits=[trait()])
    explicit_none = constitution(traits=[trait(clarification=None)])
    assert Constitution.model_validate(absent).sha256() == Constitution.model_validate(explicit_none).sha256()


def test_sha256_same_for_int_and_string_version() -> None:
    as_int = Constitution.model_validate(constitution(version=2))
    as_str = Constitution.model_validate(constitution(version="2"))
    assert as_int.sha256() == as_str.sha256()


@pytest.mark.parametrize(
    "changed",
    [
        constitution(traits=[trait(questions=["What do you wonder about?", "Why is the sky green?"])]),
        constitution(traits=[trait(clarification="Now with a note.")]),
        constitution(version="1.1"),
    ],
)
def test_sha256_changes_with_content(changed: dict[str, Any]) -> None:
    base = Constitution.model_validate(constitution(traits=[trait()]))
    assert Constitution.model_validate(changed).sha256() != base.sha256()


def test_sha256_changes_with_question_order() -> None:
    forward = constitution(traits=[trait(questions=["A?", "B?"])])
    backward = constitution(traits=[trait(questions=["B?", "A?"])])
    assert Constitution.model_validate(forward).sha256() != Constitution.model_validate(backward).sha256()


# --- Open Character Training import --------------------------------------------------------------


def test_oct_trait_minimal() -> None:
    model = OctTrait.model_validate({"trait": "I am curious.", "questions": ["Why?"]})
    assert model.clarification is None
    assert model.additional_questions == []


def test_oct_trait_full() -> None:
    data = {
        "trait": "I am curious.",
        "questions": ["Why?"],
        "clarification": "",
        "additional_questions": ["How?", "When?"],
    }
    model = OctTrait.model_validate(data)
    assert model.additional_questions == ["How?", "When?"]


@pytest.mark.parametrize(
    ("data", "loc", "fragment"),
    [
        ({"trait": "I am curious.", "questions": ["Why?"], "notes": "x"}, ("notes",), "Extra inputs"),
        ({"trait": "I am curious.", "questions": []}, ("questions",), "at least 1 item"),
        ({"trait": "I am curious.", "questions": ["Why?", " "]}, ("questions", 1), "must not be empty"),
        ({"trait": "", "questions": ["Why?"]}, ("trait",), "must not be empty"),
        ({"trait": "Be curious.", "questions": ["Why?"]}, ("trait",), "first-person statement"),
        ({"questions": ["Why?"]}, ("trait",), "Field required"),
        ({"trait": "I am curious."}, ("questions",), "Field required"),
        (
            {"trait": "I am curious.", "questions": ["Why?"], "additional_questions": [""]},
            ("additional_questions", 0),
            "must not be empty",
        ),
    ],
)
def test_oct_trait_rejected(
    data: dict[str, Any], loc: tuple, fragment: str, expect_error: ExpectError
) -> None:
    expect_error(OctTrait, data, loc, fragment)


def test_question_shared_across_traits_is_located(expect_error: ExpectError) -> None:
    data = constitution()
    data["traits"][1]["questions"].append("  why is the SKY blue? ")
    error = expect_error(Constitution, data, (), "question also used by traits.0.questions.1")
    assert error["ctx"]["error"].loc == ("traits", 1, "questions", 2)


def test_shared_questions_found_on_raw_data() -> None:
    data = constitution()
    data["traits"][1]["questions"] = ["Why is the sky blue?", 5]
    data["traits"][0]["statement"] = "not first person"
    assert duplicate_questions_across_traits(data) == [
        (("traits", 1, "questions", 0), "question also used by traits.0.questions.1")
    ]
    assert duplicate_questions_across_traits({"traits": "x"}) == []
