"""The situation taxonomy prompts are spread over, with the framings a generator can combine."""

from __future__ import annotations

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

Length = Literal["short", "medium", "long"]


def _unique_texts(values: list[str], what: str) -> list[str]:
    check_unique([value.strip().lower() for value in values], what)
    return values


class Situation(StrictModel):
    """A kind of moment users bring to an assistant, and the ways it can be framed.

    A prompt generator combines one asker, one tone and one length per prompt, so each situation
    offers at least two askers and two tones.
    """

    id: Slug
    description: NonBlankStr
    askers: list[NonBlankStr] = Field(min_length=2, description="Who the user is.")
    tones: list[NonBlankStr] = Field(min_length=2, description="Register of the message.")
    lengths: list[Length] = Field(min_length=1)
    examples: list[NonBlankStr] = Field(default_factory=list, description="Illustrative user messages.")
    domains: list[Slug] = Field(
        default_factory=list,
        description="Domains the situation lies in (e.g. risky-finance, harmful-request): a prompt "
        "generator excludes those its params name (prompts.excluded_domains, em_data.domain).",
    )

    @field_validator("askers", "tones", "lengths", "examples", "domains")
    @classmethod
    def _no_repeats(cls, values: list[str]) -> list[str]:
        return _unique_texts(values, "entry")


class SituationTaxonomy(StrictModel):
    version: Version
    description: NonBlankStr
    situations: list[Situation] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> SituationTaxonomy:
        raise_first(duplicate_situation_ids(self.model_dump()))
        return self

    def ids(self) -> list[str]:
        return [situation.id for situation in self.situations]

    def domains(self) -> set[str]:
        """Every domain some situation is tagged with."""
        return {domain for situation in self.situations for domain in situation.domains}


def duplicate_situation_ids(data: Any) -> list[tuple[tuple[str | int, ...], str]]:
    return duplicate_ids(data, "situations", "situation id")
