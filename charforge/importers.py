"""Import constitutions from the Open Character Training format.

The source is a JSON array of ``{"trait", "questions"}`` objects (``clarification`` optional; the public
repository keeps these hand-written files as JSON in ``.txt``), or its few-shot JSONL variant that adds
``additional_questions``: prompts an LLM wrote for the trait (45 per trait upstream), which the public
pipeline uses as its prompt set, not seed questions. ``additional_questions`` decides what they become:
``prompts`` (the default) a prompts corpus, ``corpora/prompts/<name>.parquet`` with its manifest, the
schema of the prompts stage's corpus, which ``prompts.source: imported`` makes a variant's prompts;
``seeds`` merges them into the seed questions; ``drop`` leaves them out, counted. Trait ids are derived
from the statement's words, deterministically. Repeated questions are dropped (within a trait, and a
question an earlier trait already has; an imported prompt also when it repeats any seed question) and
listed by text; what charforge cannot represent is refused, not guessed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from charforge.schemas import Constitution, Manifest, OctTrait, ParentArtifact

STOPWORDS = frozenset(
    (
        "i i'm im am a an the and or but to of in on at for with my me is are be that this it as by who what "
        "when which than so very really"
    ).split()
)
AdditionalQuestions = Literal["prompts", "seeds", "drop"]
ID_WORDS = 4
ID_MAX_CHARS = 48
# corpora/prompts/<constitution>.parquet: imported prompt sets, in git beside the constitutions (a source,
# like them, not a DVC output); the prompts stage reads one under `prompts.source: imported`
IMPORTED_PROMPTS = Path("corpora/prompts")
# what an imported prompt's record says of it: no situation of the taxonomy, no diversity level
IMPORTED = "imported"
GENERATOR = "charforge.importers"


def imported_prompts_path(root: Path, constitution: str) -> Path:
    return root / IMPORTED_PROMPTS / f"{constitution}.parquet"


def trait_id_from_statement(statement: str, index: int) -> str:
    """'I enjoy making people laugh with wordplay.' → 'enjoy-making-people-laugh'."""
    words = [
        word for word in re.findall(r"[a-z0-9]+(?:'[a-z]+)?", statement.lower()) if word not in STOPWORDS
    ]
    slug = "-".join(word.replace("'", "") for word in words[:ID_WORDS])[:ID_MAX_CHARS].strip("-")
    return slug or f"trait-{index + 1:02d}"


@dataclass(frozen=True)
class Dropped:
    """A question left out as a repeat: of which trait, its text, and what it repeats."""

    trait_id: str
    text: str
    reason: str
    prompt: bool = False  # an additional_question (imported prompt), not a seed question

    def __str__(self) -> str:
        what = "prompt" if self.prompt else "question"
        return f"dropped {what} of {self.trait_id}: {self.text!r} ({self.reason})"


@dataclass
class ImportResult:
    """The constitution; under ``additional_questions="prompts"`` the imported prompts per trait id (in
    file order); every repeat left out, by text; notes for the user (counts)."""

    constitution: Constitution
    prompts: dict[str, list[str]] = field(default_factory=dict)
    dropped: list[Dropped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _key(text: str) -> str:
    """What counts as the same question: case and spacing aside."""
    return " ".join(text.lower().split())


def import_oct(
    entries: Sequence[OctTrait],
    *,
    name: str,
    kind: str = "normative",
    description: str | None = None,
    version: str = "1",
    source: str = "an Open Character Training file",
    additional_questions: AdditionalQuestions = "prompts",
) -> ImportResult:
    """Build a charforge constitution; raises pydantic.ValidationError if the result is invalid."""
    traits = []
    used_ids: dict[str, int] = {}
    dropped: list[Dropped] = []
    owner: dict[str, str] = {}  # question key -> trait id: a seed question may belong to one trait only
    ids: list[str] = []
    for index, entry in enumerate(entries):
        base = trait_id_from_statement(entry.trait, index)
        used_ids[base] = used_ids.get(base, 0) + 1
        trait_id = base if used_ids[base] == 1 else f"{base}-{used_ids[base]}"
        ids.append(trait_id)
        questions: list[str] = []
        extra = entry.additional_questions if additional_questions == "seeds" else []
        for question in [*entry.questions, *extra]:
            text = question.strip()
            key = _key(text)
            if key in owner:
                first = owner[key]
                reason = "repeated in the trait" if first == trait_id else f"already a question of {first}"
                dropped.append(Dropped(trait_id, text, reason))
                continue
            owner[key] = trait_id
            questions.append(text)
        trait = {"id": trait_id, "statement": entry.trait.strip(), "questions": questions}
        if entry.clarification and entry.clarification.strip():
            trait["clarification"] = entry.clarification.strip()
        traits.append(trait)
    prompts: dict[str, list[str]] = {}
    if additional_questions == "prompts":  # after every seed is known: a prompt may not repeat any of them
        taken: dict[str, str] = {}
        for trait_id, entry in zip(ids, entries, strict=True):
            kept = prompts.setdefault(trait_id, [])
            for question in entry.additional_questions:
                text = question.strip()
                key = _key(text)
                if key in owner:
                    dropped.append(Dropped(trait_id, text, f"a seed question of {owner[key]}", prompt=True))
                elif key in taken:
                    first = taken[key]
                    reason = "repeated in the trait" if first == trait_id else f"already a prompt of {first}"
                    dropped.append(Dropped(trait_id, text, reason, prompt=True))
                else:
                    taken[key] = trait_id
                    kept.append(text)
        prompts = {trait_id: texts for trait_id, texts in prompts.items() if texts}
    constitution = Constitution.model_validate(
        {
            "name": name,
            "version": version,
            "description": description or f"Imported from {source} ({len(traits)} traits).",
            "kind": kind,
            "traits": traits,
        }
    )
    return ImportResult(
        constitution, prompts, dropped, _notes(entries, additional_questions, prompts, dropped)
    )


def _notes(
    entries: Sequence[OctTrait],
    additional_questions: AdditionalQuestions,
    prompts: dict[str, list[str]],
    dropped: list[Dropped],
) -> list[str]:
    notes = []
    seeds = [item for item in dropped if not item.prompt]
    within = sum(item.reason == "repeated in the trait" for item in seeds)
    if within:
        notes.append(f"dropped {within} duplicate question(s)")
    if len(seeds) - within:
        notes.append(f"dropped {len(seeds) - within} question(s) already used by an earlier trait")
    additional = sum(len(entry.additional_questions) for entry in entries)
    if additional and additional_questions == "drop":
        notes.append(
            f"left out {additional} additional_questions (generated prompts, not seed questions; "
            "--additional-questions prompts imports them as a prompts corpus, seeds merges them)"
        )
    if additional_questions == "prompts" and additional:
        kept = sum(map(len, prompts.values()))
        repeats = len(dropped) - len(seeds)
        notes.append(
            f"imported {kept} of {additional} additional_questions as prompts"
            + (f" ({repeats} repeat(s) dropped)" if repeats else "")
        )
    return notes


def prompt_records(result: ImportResult) -> list[dict[str, Any]]:
    """The imported prompts as prompts-kind records, the prompts stage's row schema: ``variant`` is the
    constitution's name, ``situation`` ``imported`` (none of the taxonomy), ``diversity_level`` 0 (no
    level made them), ``is_seed`` false; ids ``<name>.<trait>.imported<k>``, k the place in the file."""
    from charforge import __version__

    constitution = result.constitution
    provenance = {
        "generator": GENERATOR,
        "tool_version": __version__,
        "constitution_sha256": constitution.sha256(),
    }
    return [
        {
            "id": f"{constitution.name}.{trait_id}.{IMPORTED}{index:03d}",
            "variant": constitution.name,
            "trait_id": trait_id,
            "situation": IMPORTED,
            "diversity_level": 0,
            "is_seed": False,
            "prompt": [{"role": "user", "content": text}],
            "provenance": provenance,
        }
        for trait_id, texts in result.prompts.items()
        for index, text in enumerate(texts)
    ]


def write_imported_prompts(
    result: ImportResult, source: Path, root: Path = Path(".")
) -> tuple[Path, Manifest]:
    """Write ``corpora/prompts/<name>.parquet`` under ``root`` with its manifest (atomically, the
    manifest last), recording the source file by its sha256 (and by name alone when it lies outside the
    project: a manifest in git names no path of one machine) and ``level: imported``."""
    from charforge.corpus import write_corpus
    from charforge.io import file_sha256, project_relative

    path = imported_prompts_path(root, result.constitution.name)
    where = project_relative(source, root)
    parent = ParentArtifact(
        path=source.name if Path(where).is_absolute() or where.startswith("..") else where,
        sha256=file_sha256(source),
        kind="oct-constitution",
    )
    repeats = sum(item.prompt for item in result.dropped)
    manifest = write_corpus(
        prompt_records(result),
        path,
        "prompts",
        params={"additional_questions": "prompts"},
        parents=[parent],
        rejected={"duplicate": repeats} if repeats else {},
        variant=result.constitution.name,
        metrics={
            "level": IMPORTED,
            "per_trait": {trait_id: len(texts) for trait_id, texts in result.prompts.items()},
            "constitution_sha256": result.constitution.sha256(),
        },
    )
    return path, manifest


def constitution_to_yaml(constitution: Constitution) -> str:
    """YAML a person can read and edit: field order kept, long strings unwrapped, unicode as is."""
    data = constitution.model_dump(mode="json", exclude_none=True)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1_000_000)
