"""Benign prompts: the general requests the student answers for the ``interleave`` and ``kl`` EM defences
(docs/design.md §1, "EM defences"). charforge's own file is YAML with a ``prompts`` list of strings;
other projects' instruction sets are read as they publish them (``charforge.generators.benign``)."""

from __future__ import annotations

from pydantic import Field, field_validator

from charforge.schemas.base import NonBlankStr, StrictModel


class BenignPrompts(StrictModel):
    prompts: list[NonBlankStr] = Field(min_length=1, description="Everyday requests, one per entry.")

    @field_validator("prompts")
    @classmethod
    def _distinct(cls, prompts: list[str]) -> list[str]:
        seen: set[str] = set()
        for prompt in prompts:
            key = " ".join(prompt.split())
            if key in seen:
                raise ValueError(f"{prompt!r} is listed more than once (it would be answered twice)")
            seen.add(key)
        return prompts
