"""Import constitutions from the Open Character Training format.

The source is a JSON array of ``{"trait", "questions"}`` objects (``clarification`` optional; the public
repository keeps these hand-written files as JSON in ``.txt``), or its few-shot JSONL variant that adds
``additional_questions``: prompts an LLM wrote for the trait (45 per trait upstream), not the author's
seed questions. They are dropped by default, counted in the notes, so a trait keeps its few seeds (a
diversity level would otherwise be mostly the same fixed prompts); ``additional_questions="seeds"``
merges them. Trait ids are derived from the statement's words, deterministically. Repeated questions are
dropped (within a trait, and a question an earlier trait already has) and counted in the notes; what
charforge cannot represent is refused, not guessed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import yaml

from charforge.schemas import Constitution, OctTrait

STOPWORDS = frozenset(
    (
        "i i'm im am a an the and or but to of in on at for with my me is are be that this it as by who what "
        "when which than so very really"
    ).split()
)
AdditionalQuestions = Literal["drop", "seeds"]
ID_WORDS = 4
ID_MAX_CHARS = 48


def trait_id_from_statement(statement: str, index: int) -> str:
    """'I enjoy making people laugh with wordplay.' → 'enjoy-making-people-laugh'."""
    words = [
        word for word in re.findall(r"[a-z0-9]+(?:'[a-z]+)?", statement.lower()) if word not in STOPWORDS
    ]
    slug = "-".join(word.replace("'", "") for word in words[:ID_WORDS])[:ID_MAX_CHARS].strip("-")
    return slug or f"trait-{index + 1:02d}"


@dataclass
class ImportResult:
    constitution: Constitution
    questions_dropped: int = 0
    notes: list[str] = field(default_factory=list)


def import_oct(
    entries: Sequence[OctTrait],
    *,
    name: str,
    kind: str = "normative",
    description: str | None = None,
    version: str = "1",
    source: str = "an Open Character Training file",
    additional_questions: AdditionalQuestions = "drop",
) -> ImportResult:
    """Build a charforge constitution; raises pydantic.ValidationError if the result is invalid."""
    traits = []
    used_ids: dict[str, int] = {}
    dropped = 0
    shared = 0
    taken: set[str] = set()  # a seed question may belong to one trait only
    additional = sum(len(entry.additional_questions) for entry in entries)
    for index, entry in enumerate(entries):
        base = trait_id_from_statement(entry.trait, index)
        used_ids[base] = used_ids.get(base, 0) + 1
        trait_id = base if used_ids[base] == 1 else f"{base}-{used_ids[base]}"
        questions: list[str] = []
        seen: set[str] = set()
        extra = entry.additional_questions if additional_questions == "seeds" else []
        for question in [*entry.questions, *extra]:
            text = question.strip()
            key = " ".join(text.lower().split())
            if key in seen:
                dropped += 1
                continue
            seen.add(key)
            if key in taken:
                shared += 1
                continue
            taken.add(key)
            questions.append(text)
        trait = {"id": trait_id, "statement": entry.trait.strip(), "questions": questions}
        if entry.clarification and entry.clarification.strip():
            trait["clarification"] = entry.clarification.strip()
        traits.append(trait)
    constitution = Constitution.model_validate(
        {
            "name": name,
            "version": version,
            "description": description or f"Imported from {source} ({len(traits)} traits).",
            "kind": kind,
            "traits": traits,
        }
    )
    notes = [f"dropped {dropped} duplicate question(s)"] if dropped else []
    if additional and additional_questions == "drop":
        notes.append(
            f"left out {additional} additional_questions (generated prompts, not seed questions; "
            "--additional-questions seeds merges them)"
        )
    if shared:
        notes.append(f"dropped {shared} question(s) already used by an earlier trait")
    return ImportResult(constitution, dropped + shared, notes)


def constitution_to_yaml(constitution: Constitution) -> str:
    """YAML a person can read and edit: field order kept, long strings unwrapped, unicode as is."""
    data = constitution.model_dump(mode="json", exclude_none=True)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1_000_000)
