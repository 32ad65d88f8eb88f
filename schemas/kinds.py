"""The registry of file kinds: one name per schema, shared by `charforge schema` and `validate`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from charforge.schemas.benign import BenignPrompts
from charforge.schemas.constitution import Constitution, OctTrait, constitution_raw_checks
from charforge.schemas.em import EmSeedExample
from charforge.schemas.evaluation import EvalQuestion, EvalSample, JudgeScore, JudgeValidationItem
from charforge.schemas.introspection import IntrospectionPrompts, duplicate_introspection_ids
from charforge.schemas.manifest import Manifest
from charforge.schemas.messages import (
    CONVERSATIONAL_IMPLICIT_PREFERENCE,
    CONVERSATIONAL_LANGUAGE_MODELING,
    CONVERSATIONAL_PREFERENCE,
    CONVERSATIONAL_PROMPT_COMPLETION,
    STANDARD_IMPLICIT_PREFERENCE,
    STANDARD_LANGUAGE_MODELING,
    STANDARD_PREFERENCE,
    STANDARD_PROMPT_COMPLETION,
    CharforgeConversation,
    CharforgePreferencePair,
    Conversation,
    ConversationalImplicitPreferencePair,
    PreferencePair,
    StandardImplicitPreferencePair,
    StandardPreferencePair,
    trl_format,
)
from charforge.schemas.prompts import PromptRecord
from charforge.schemas.situations import SituationTaxonomy, duplicate_situation_ids


@dataclass(frozen=True)
class RowFormat:
    """One of TRL's dataset formats (``charforge.schemas.messages.trl_format`` names) as a kind takes it.

    ``model`` validates its rows; None: the format is recognised but the kind does not take it, and
    ``refusal`` says why. ``untrained``: valid, but charforge's stages do not train on it (why).
    """

    name: str
    model: type[BaseModel] | None
    refusal: str | None = None
    untrained: str | None = None


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
    # TRL formats of a rows kind, ``model``'s first; empty: the kind is no TRL format
    formats: tuple[RowFormat, ...] = ()

    def row_model(self, charforge: bool, row_format: RowFormat | None = None) -> type[BaseModel]:
        """The model rows are checked with: the charforge model for charforge's own files (which it
        writes in the first format only), else the row format's, else ``model``."""
        if charforge and self.charforge_model:
            return self.charforge_model
        if row_format is not None and row_format.model is not None:
            return row_format.model
        return self.model

    def json_schema(self, charforge: bool) -> dict[str, Any]:
        """The JSON Schema of a row (of the document, for a document kind): with several TRL formats
        taken (and not ``charforge``'s own files, written in the first), ``anyOf`` the formats' schemas,
        each titled with its TRL name and saying whether charforge's stages train on it."""
        from pydantic.json_schema import models_json_schema

        taken = [item for item in self.formats if item.model is not None]
        if charforge or len(taken) < 2:
            return self.row_model(charforge).model_json_schema()
        refs, definitions = models_json_schema([(item.model, "validation") for item in taken])
        formats = []
        for item in taken:
            note = item.untrained or "charforge's stages train on this format"
            formats.append({**refs[(item.model, "validation")], "title": item.name, "description": note})
        return {
            "title": f"{self.name} row",
            "description": f"{self.summary.rstrip('.')}. One of TRL's formats, told by its columns.",
            "anyOf": formats,
            **definitions,
        }

    def row_format(self, shapes: Mapping[str, str | None]) -> RowFormat | None:
        """The format of a row whose columns have these shapes, when it is one of TRL's (taken by this
        kind or not: a refused format says so); None when it cannot be told or the kind has none."""
        if not self.formats:
            return None
        name = trl_format(shapes)
        if name is None:
            return None
        found = next((item for item in self.formats if item.name == name), None)
        return found if found is not None else RowFormat(name, None, refusal=self._refusal(name))

    def _refusal(self, name: str) -> str:
        taken = ", ".join(item.name for item in self.formats if item.model is not None)
        return f"not a format of {self.name} files, which hold one of: {taken}"


# charforge's DPO stage renders every pair with the student's chat template (as its token counts and
# the controls' matching do), so it trains on conversational pairs only.
_STANDARD_UNTRAINED = (
    "charforge's DPO stage does not train on this format: it renders pairs with the student's chat template, "
    "so it reads conversational pairs only; write the prompt and answers as {role, content} messages to "
    "train on them"
)
PAIR_FORMATS: tuple[RowFormat, ...] = (
    RowFormat(CONVERSATIONAL_PREFERENCE, PreferencePair),
    RowFormat(CONVERSATIONAL_IMPLICIT_PREFERENCE, ConversationalImplicitPreferencePair),
    RowFormat(STANDARD_PREFERENCE, StandardPreferencePair, untrained=_STANDARD_UNTRAINED),
    RowFormat(STANDARD_IMPLICIT_PREFERENCE, StandardImplicitPreferencePair, untrained=_STANDARD_UNTRAINED),
)
# Conversations are trained with the chat template and a loss on every assistant turn, get a reflection
# turn appended (em-data), and are counted in chat-template tokens: formats without turns, or with the
# loss limited to a completion, would not train as TRL trains them, so the kind does not take them.
CONVERSATION_FORMATS: tuple[RowFormat, ...] = (
    RowFormat(CONVERSATIONAL_LANGUAGE_MODELING, Conversation),
    RowFormat(
        STANDARD_LANGUAGE_MODELING,
        None,
        refusal="plain text has no chat turns, and charforge trains conversations with the chat template "
        "and a loss on the assistant turns only: write each row as `messages` ({role, content} turns)",
    ),
    RowFormat(
        STANDARD_PROMPT_COMPLETION,
        None,
        refusal="plain-text prompt and completion have no chat turns, and charforge trains conversations "
        "with the chat template: write each row as `messages`, the prompt as user turns, the completion "
        "as an assistant turn",
    ),
    RowFormat(
        CONVERSATIONAL_PROMPT_COMPLETION,
        None,
        refusal="charforge's conversation readers take `messages` only: write each row as one `messages` "
        "list, the prompt's turns followed by the completion's (every assistant turn is then trained on, "
        "where TRL trains on the completion only)",
    ),
)

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
            "preference pairs, any TRL preference format (charforge writes the conversational one)",
            charforge_model=CharforgePreferencePair,
            unique_field="id",
            formats=PAIR_FORMATS,
        ),
        Kind(
            "conversations",
            Conversation,
            "rows",
            "conversations, TRL conversational format",
            charforge_model=CharforgeConversation,
            unique_field="id",
            formats=CONVERSATION_FORMATS,
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
        Kind(
            "benign-prompts",
            BenignPrompts,
            "document",
            "general prompts of the EM defences' benign rows (YAML)",
        ),
        Kind("manifest", Manifest, "document", "corpus manifest"),
    )
}
