"""Constitutions: first-person trait statements, each with seed user messages (docs/design.md §4)."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from charforge.schemas.base import (
    NonBlankStr,
    Slug,
    StrictModel,
    Version,
    check_unique,
    duplicate_ids,
    raise_first,
)

ConstitutionKind = Literal["normative", "neutral", "control"]
# The statement is the model speaking about itself, wherever its first person stands: "I …", "I'm …",
# "My goals are …", "Even when …, I find …", "… matters to me". "I" counts only as a capital (the
# pronoun), the other forms in either case at a word's start.
FIRST_PERSON_RE = re.compile(r"(?<![\w'’])(?:I(?:['’](?:m|ve|d|ll))?|[Mm](?:e|y|ine|yself))(?![\w'’])")
FIRST_PERSON_MESSAGE = (
    "must be a first-person statement, the model speaking about itself (I, me, my, mine, myself: e.g. "
    "'I …' or 'My goals …')"
)


def check_first_person(statement: str) -> str:
    """``statement`` when it speaks in the first person; ValueError otherwise. One rule for charforge
    constitutions and Open Character Training files, so `validate` and `import-constitution` agree."""
    if not FIRST_PERSON_RE.search(statement):
        raise ValueError(FIRST_PERSON_MESSAGE)
    return statement


class Trait(StrictModel):
    """One trait: a first-person statement and the seed user messages that bring it out."""

    id: Slug
    statement: NonBlankStr = Field(description="First person: the model speaking about itself.")
    questions: list[NonBlankStr] = Field(min_length=1, description="Seed user messages; unique.")
    clarification: NonBlankStr | None = Field(
        default=None, description="Optional note for the teacher on what the trait means."
    )

    @field_validator("statement")
    @classmethod
    def _first_person(cls, statement: str) -> str:
        return check_first_person(statement)

    @field_validator("questions")
    @classmethod
    def _unique_questions(cls, questions: list[str]) -> list[str]:
        check_unique([q.strip() for q in questions], "question")
        return questions


class Constitution(StrictModel):
    """A character constitution: the document the whole pipeline starts from."""

    name: Slug
    version: Version = Field(description="Dotted number such as '1' or '1.2.0'; quote it in YAML.")
    description: NonBlankStr
    kind: ConstitutionKind
    traits: list[Trait] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids_and_questions(self) -> Constitution:
        raise_first(constitution_raw_checks(self.model_dump()))
        return self

    def sha256(self) -> str:
        """Content hash over the canonical JSON of the constitution (formatting-independent)."""
        canonical = json.dumps(
            self.model_dump(mode="json", exclude_none=True),
            sort_keys=True,
            ensure_ascii=False,
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def trait_list(self) -> str:
        """The constitution as a system prompt shows it: one ``- statement (clarification)`` line per
        trait (the distilling teacher's and the introspecting model's)."""
        lines = []
        for trait in self.traits:
            note = f" ({trait.clarification})" if trait.clarification else ""
            lines.append(f"- {trait.statement}{note}")
        return "\n".join(lines)

    def held_out(self, trait: Trait, per_trait: int) -> list[int]:
        """Indices into ``trait.questions`` of the trait's held-out seed questions, ascending: the first
        ``per_trait`` in a fixed hash order (sha256 of the constitution's name, the trait id and the
        question). A function of the constitution alone, so the same at every diversity level and seed
        and for every variant scored on it; kept out of every training corpus (docs/design.md §5).

        Raises:
            ValueError: ``per_trait`` would leave the trait no seed question to train on.
        """
        if per_trait >= len(trait.questions):
            raise ValueError(
                f"held_out.per_trait ({per_trait}) would hold out every seed question of trait {trait.id} "
                f"in constitution {self.name} (it has {len(trait.questions)}); at least one must stay for "
                "training"
            )

        def order(index: int) -> str:
            key = f"{self.name}\0{trait.id}\0{trait.questions[index]}"
            return hashlib.sha256(key.encode()).hexdigest()

        return sorted(sorted(range(len(trait.questions)), key=order)[:per_trait])


def seed_question_id(trait_id: str, index: int) -> str:
    """The local id of a trait's seed question, by its place in the constitution: the same whether the
    question is a training prompt (``<variant>.<trait>.seed<k>``) or held out
    (``<constitution>.<trait>.seed<k>``), so the two sets can be checked apart by id."""
    return f"{trait_id}.seed{index}"


def duplicate_trait_ids(data: Any) -> list[tuple[tuple[str | int, ...], str]]:
    return duplicate_ids(data, "traits", "trait id")


def duplicate_questions_across_traits(data: Any) -> list[tuple[tuple[str | int, ...], str]]:
    """A seed question under two traits makes the pair it yields ambiguous: which trait does it train?"""
    traits = data.get("traits") if isinstance(data, dict) else None
    if not isinstance(traits, list):
        return []
    first: dict[str, tuple[int, int]] = {}
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for trait_index, trait in enumerate(traits):
        questions = trait.get("questions") if isinstance(trait, dict) else None
        if not isinstance(questions, list):
            continue
        seen_here: set[str] = set()
        for question_index, question in enumerate(questions):
            if not isinstance(question, str):
                continue
            key = " ".join(question.lower().split())
            if key in first and key not in seen_here:
                where = first[key]
                problems.append(
                    (
                        ("traits", trait_index, "questions", question_index),
                        f"question also used by traits.{where[0]}.questions.{where[1]}",
                    )
                )
            first.setdefault(key, (trait_index, question_index))
            seen_here.add(key)
    return problems


def constitution_raw_checks(data: Any) -> list[tuple[tuple[str | int, ...], str]]:
    return duplicate_trait_ids(data) + duplicate_questions_across_traits(data)


class OctTrait(StrictModel):
    """One entry of an Open Character Training constitution (JSON array, or its JSONL variant)."""

    trait: NonBlankStr
    questions: list[NonBlankStr] = Field(min_length=1)
    clarification: str | None = None
    additional_questions: list[NonBlankStr] = Field(default_factory=list)

    @field_validator("trait")
    @classmethod
    def _first_person(cls, statement: str) -> str:
        return check_first_person(statement)
