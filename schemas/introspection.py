"""Introspection prompts: self-reflection prompts (general ones, and EM-targeted ones that an option
switches on) and self-interaction openers (docs/design.md §2)."""

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
    reflection: list[ReflectionPrompt] = Field(min_length=10, description="General self-reflection.")
    em_reflection: list[ReflectionPrompt] = Field(
        default_factory=list,
        description="Reflection prompts that rehearse what the EM evaluation tests; answered only where "
        "a stage's option switches them on (introspection.em_reflection_prompts), a hypothesis of its own.",
    )
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
    """Repeated ids within each list, and an em_reflection id that the reflection list already uses
    (one prompt id names one prompt, whichever list holds it)."""
    problems = (
        duplicate_ids(data, "reflection", "reflection id")
        + duplicate_ids(data, "em_reflection", "em_reflection id")
        + duplicate_ids(data, "openers", "opener id")
    )
    general = data.get("reflection") if isinstance(data, dict) else None
    targeted = data.get("em_reflection") if isinstance(data, dict) else None
    if isinstance(general, list) and isinstance(targeted, list):
        where = {item["id"]: i for i, item in enumerate(general) if isinstance(item, dict) and "id" in item}
        for index, item in enumerate(targeted):
            item_id = item.get("id") if isinstance(item, dict) else None
            if isinstance(item_id, str) and item_id in where:
                first = f"reflection.{where[item_id]}"
                message = f"em_reflection id {item_id!r} is also a reflection id ({first})"
                problems.append((("em_reflection", index, "id"), message))
    return problems
