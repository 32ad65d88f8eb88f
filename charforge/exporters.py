"""Export charforge constitutions to the public Open Character Training format.

The format is what ``charforge.importers`` reads: a JSON array of ``{"trait", "questions"}`` objects with
an optional ``clarification`` (the public repository's hand-written files, JSON in a ``.txt``), or the
same objects one per line (its JSONL variant). It holds the trait statements, their seed questions and
clarifications, nothing else: a constitution's name, version, description, kind and trait ids have no
place in it (an import derives the ids from the statements again), so ``export_notes`` says what an
export leaves behind. For a constitution that came from an import, import → export → import is a fixed
point: the export parses to the original file's entries and importing it gives the same constitution.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from charforge.importers import import_oct
from charforge.schemas import Constitution, OctTrait

# suffix -> layout: the hand-written files are a JSON array (indented by 4, as published), the few-shot
# files one object per line
OCT_LAYOUTS = {".json": "json", ".txt": "json", ".jsonl": "jsonl"}


class ExportError(ValueError):
    """The export cannot be made as asked: no such constitution, an output suffix of unknown layout."""


def resolve_constitution(name_or_path: str, root: Path = Path(".")) -> Path:
    """The constitution file ``name_or_path`` means: a file by that path, else the project's constitution
    of that name (``corpora/constitutions/<name>.yaml`` under ``root``)."""
    from charforge.paths import CONSTITUTIONS, constitution_path
    from charforge.schemas.base import SLUG_RE

    given = Path(name_or_path)
    is_file = given.exists() and not given.is_dir()  # a FIFO too: validate refuses it, unread
    if is_file or not SLUG_RE.fullmatch(name_or_path):
        if not is_file:
            raise ExportError(f"{name_or_path}: no such file, and not a constitution name (a slug)")
        return given
    path = constitution_path(root, name_or_path)
    if not path.exists():
        known = sorted(item.stem for item in (root / CONSTITUTIONS).glob("*.yaml"))
        raise ExportError(
            f"no constitution named {name_or_path!r} ({path} does not exist); known: "
            + (", ".join(known) or "none")
        )
    return path


def constitution_to_oct(constitution: Constitution) -> list[dict[str, Any]]:
    """The constitution's traits as Open Character Training entries, in order: ``trait``, ``questions``
    and ``clarification`` when the trait has one (the public files omit the key rather than leave it
    empty)."""
    entries = []
    for trait in constitution.traits:
        entry: dict[str, Any] = {"trait": trait.statement, "questions": list(trait.questions)}
        if trait.clarification is not None:
            entry["clarification"] = trait.clarification
        entries.append(OctTrait.model_validate(entry).model_dump(exclude_defaults=True))
    return entries


def load_constitution(name_or_path: str, root: Path = Path(".")) -> Constitution:
    """The constitution ``name_or_path`` means (``resolve_constitution``). Raises ExportError when there
    is none (or its format is unknown), charforge.params.SourceFileError with every problem located when
    it is invalid; a FIFO or a device is refused without being read."""
    from charforge.params import SourceFileError, load_source
    from charforge.validate import UsageError, validate_file

    path = resolve_constitution(name_or_path, root)
    try:
        report = validate_file(path, "constitution")
    except UsageError as error:
        raise ExportError(str(error)) from None
    if not report.valid:
        raise SourceFileError(report.problems)
    return load_source(Constitution, path)


def oct_layout(output: Path) -> str:
    """``json`` (an array) or ``jsonl`` (one entry per line), from the output's suffix."""
    layout = OCT_LAYOUTS.get(output.suffix.lower())
    if layout is None:
        raise ExportError(
            f"{output}: cannot tell the layout from the suffix {output.suffix or '(none)'!r}; use .json or "
            ".txt (a JSON array, as the public hand-written constitutions) or .jsonl (one trait per line)"
        )
    return layout


def oct_text(entries: list[dict[str, Any]], layout: str) -> str:
    """The entries as the public files write them; unicode kept as is."""
    if layout == "jsonl":
        return "".join(json.dumps(entry, ensure_ascii=False) + "\n" for entry in entries)
    return json.dumps(entries, indent=4, ensure_ascii=False) + "\n"


def export_notes(constitution: Constitution, entries: list[dict[str, Any]]) -> list[str]:
    """What the public format cannot carry, said once, and the trait ids a re-import would change."""
    notes = [
        "the Open Character Training format holds statements, questions and clarifications only: name "
        f"{constitution.name!r}, version, description and kind {constitution.kind!r} are not in it"
    ]
    reimported = import_oct(
        [OctTrait.model_validate(entry) for entry in entries],
        name=constitution.name,
        kind=constitution.kind,
        description=constitution.description,
        version=constitution.version,
    ).constitution
    changed = [
        f"{old.id} -> {new.id}"
        for old, new in zip(constitution.traits, reimported.traits, strict=True)
        if old.id != new.id
    ]
    if changed:
        notes.append(
            f"{len(changed)} trait id(s) are not those an import derives from the statement, so a re-import "
            f"renames them (the held-out seed questions follow the ids): {', '.join(changed)}"
        )
    altered = [
        old.id
        for old, new in zip(constitution.traits, reimported.traits, strict=True)
        if (old.statement, old.questions, old.clarification)
        != (new.statement, new.questions, new.clarification)
    ]
    if altered:  # surrounding whitespace is stripped and near-repeats dropped by an import
        notes.append(
            f"a re-import would not give back the text of {len(altered)} trait(s) exactly (whitespace "
            f"stripped, repeated questions dropped): {', '.join(altered)}"
        )
    return notes
