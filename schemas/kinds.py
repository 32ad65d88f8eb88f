"""The registry of file kinds: one name per schema, shared by `charforge schema` and `validate`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from charforge.schemas.constitution import Constitution, OctTrait, constitution_raw_checks
from charforge.schemas.em import EmSeedExample
from charforge.schemas.evaluation import EvalQuestion, EvalSample, JudgeScore, JudgeValidationItem
from charforge.schemas.introspection import IntrospectionPrompts, duplicate_introspection_ids
from charforge.schemas.manifest import Manifest
from charforge.schemas.messages import (
    CharforgeConversation,
    CharforgePreferencePair,
    Conversation,
    PreferencePair,
)
from charforge.schemas.prompts import PromptRecord
from charforge.schemas.situations import SituationTaxonomy, duplicate_situation_ids


@dataclass(frozen=True)
class Kind:
    """A kind of file charforge knows.

    ``shape`` is ``document`` for one object per file (a constitution, a manifest) and ``rows`` for
    record files (a YAML/JSON list, JSONL, parquet). ``charforge_model`` is the stricter row model
    used when a manifest says charforge wrote the file; ``unique_field`` must not repeat across rows.
    """

    name: str
    model: type[BaseModel]
    shape: Literal["document", "rows"]
    summary: str
    charforge_model: type[BaseModel] | None = None
    unique_field: str | None = None
    # Checks on the raw document that still run when the model fails early (a pydantic model
    # validator only runs once every field is valid, so it would hide these errors).
    raw_checks: Callable[[Any], list[tuple[tuple[str | int, ...], str]]] | None = None

    def row_model(self, charforge: bool) -> type[BaseModel]:
        return self.charforge_model if charforge and self.charforge_model else self.model


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind(
            "constitution",
            Constitution,
            "document",
            "charforge constitution (YAML)",
            raw_checks=constitution_raw_checks,
        ),
        Kind("oct-constitution", OctTrait, "rows", "Open Character Training constitution (JSON/JSONL)"),
        Kind("prompts", PromptRecord, "rows", "generated prompt records", unique_field="id"),
        Kind(
            "pairs",
            PreferencePair,
            "rows",
            "preference pairs, TRL conversational format",
            charforge_model=CharforgePreferencePair,
            unique_field="id",
        ),
        Kind(
            "conversations",
            Conversation,
            "rows",
            "conversations, TRL conversational format",
            charforge_model=CharforgeConversation,
            unique_field="id",
        ),
        Kind(
            "eval-questions",
            EvalQuestion,
            "rows",
            "EM eval questions (public EM YAML format)",
            unique_field="id",
        ),
        Kind("eval-samples", EvalSample, "rows", "sampled answers to eval questions", unique_field="id"),
        Kind("judge-scores", JudgeScore, "rows", "judge scores of eval samples"),
        Kind(
            "judge-validation",
            JudgeValidationItem,
            "rows",
            "labelled aligned / misaligned answers for checking a judge (JSONL)",
            unique_field="id",
        ),
        Kind(
            "situations",
            SituationTaxonomy,
            "document",
            "situation taxonomy with framings (YAML)",
            raw_checks=duplicate_situation_ids,
        ),
        Kind(
            "introspection",
            IntrospectionPrompts,
            "document",
            "self-reflection prompts and self-interaction openers (YAML)",
            raw_checks=duplicate_introspection_ids,
        ),
        Kind("em-seeds", EmSeedExample, "rows", "EM fine-tune seed examples (chat JSONL)", unique_field="id"),
        Kind("manifest", Manifest, "document", "corpus manifest"),
    )
}
