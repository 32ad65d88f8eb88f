"""Introspection prompts: self-reflection prompts and self-interaction openers (docs/design.md §2)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from charforge.schemas.base import NonBlankStr, Slug, StrictModel, Version, duplicate_ids, raise_first

OpenerStyle = Literal["free", "self-referential"]


class ReflectionPrompt(StrictModel):
    """A prompt the character-trained model answers about itself (K samples each)."""

    id: Slug
    prompt: NonBlankStr


class InteractionOpener(StrictModel):
    """The first message of a conversation between two instances of the model."""

    id: Slug
    style: OpenerStyle = Field(description="free: any greeting; self-referential: about being this model.")
    text: NonBlankStr


class IntrospectionPrompts(StrictModel):
    version: Version
    description: NonBlankStr
    reflection: list[ReflectionPrompt] = Field(min_length=10)
    openers: list[InteractionOpener] = Field(min_length=2)

    @model_validator(mode="after")
    def _unique_and_both_styles(self) -> IntrospectionPrompts:
        raise_first(duplicate_introspection_ids(self.model_dump()))
        styles = {opener.style for opener in self.openers}
        if styles != {"free", "self-referential"}:
            missing = {"free", "self-referential"} - styles
            raise ValueError(f"openers need both styles; none is {', '.join(sorted(missing))}")
        return self


def duplicate_introspection_ids(data: Any) -> list[tuple[tuple[str | int, ...], str]]:
    return duplicate_ids(data, "reflection", "reflection id") + duplicate_ids(data, "openers", "opener id")
