"""The facts a dataset card states, gathered from what made the corpora: manifests, the rows' provenance,
the constitution files, ``dvc.lock`` and ``params.yaml``. ``charforge.card`` renders them."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from charforge.io import file_sha256, read_yaml
from charforge.paths import CONSTITUTIONS
from charforge.schemas import Manifest

UNKNOWN_LICENCE = "unknown — check before publishing"
LICENCE_KEYS = ("teacher_licence", "teacher_license")
SMOKE_MODEL = "embedded:smollm2-135m-instruct"


class CardError(ValueError):
    """A project file the card reads (dvc.lock, params.yaml) cannot be read."""


def teacher_and_licence(manifest: Manifest) -> tuple[str | None, str]:
    """The teacher model and the licence of its outputs: a ``teacher_licence`` in the manifest's metrics
    or params, a ``licence`` in the teacher's role, the embedded model's known licence, else unknown."""
    teacher = manifest.params.get("models.teacher")
    model = teacher.get("model") if isinstance(teacher, Mapping) else None
    candidates = [source.get(key) for source in (manifest.metrics, manifest.params) for key in LICENCE_KEYS]
    if isinstance(teacher, Mapping):
        candidates += [teacher.get("licence"), teacher.get("license")]
    for candidate in candidates:
        if isinstance(candidate, str) and candidate.strip():
            return model, candidate
    if isinstance(model, str) and model.startswith("embedded:"):
        from charforge.generators.embedded import EmbeddedModelError, lookup

        try:
            return model, f"{lookup(model).licence} (the embedded model's licence)"
        except EmbeddedModelError:
            pass
    return model, UNKNOWN_LICENCE


def provenance(path: Path) -> pl.DataFrame | None:
    """The provenance column, unnested (read once per file version: the card asks several times)."""
    stat = path.stat()
    return _provenance(path.resolve(), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _provenance(path: Path, mtime_ns: int, size: int) -> pl.DataFrame | None:
    if "provenance" not in pq.read_schema(path).names:
        return None
    return pl.read_parquet(path, columns=["provenance"]).unnest("provenance")


def row_models(path: Path) -> set[tuple[str, str]]:
    """(role, model) pairs named in the rows' provenance."""
    rows = provenance(path)
    if rows is None or "models" not in rows.columns:
        return set()
    pairs = rows.select("models").unique().unnest("models")
    return {(role, model) for role in pairs.columns for model in pairs[role].drop_nulls().unique().to_list()}


def manifest_roles(manifest: Manifest) -> dict[str, Mapping[str, Any]]:
    """``models.<role>`` entries of the manifest's params: role → backend, model, sampling."""
    return {
        key.removeprefix("models."): value
        for key, value in manifest.params.items()
        if key.startswith("models.") and isinstance(value, Mapping)
    }


def all_models(manifest: Manifest, source: Path) -> set[str]:
    named = {str(role.get("model")) for role in manifest_roles(manifest).values()}
    return named | {model for _, model in row_models(source)}


@dataclass
class Constitutions:
    found: list[tuple[Path, str, str | None]] = field(default_factory=list)  # path, file sha, content sha
    missing_files: list[tuple[str, str]] = field(default_factory=list)  # path named, file sha
    unmatched_rows: list[str] = field(default_factory=list)  # content shas no file matches


def _content_sha(path: Path) -> str | None:
    from charforge.schemas import Constitution

    try:
        return Constitution.model_validate(read_yaml(path)).sha256()
    except Exception:  # an unreadable or invalid file is simply not a match
        return None


def find_constitutions(corpora: Sequence[tuple[Manifest, Path]], root: Path) -> Constitutions:
    """The constitutions behind the corpora: the files their manifests name (checked by file sha256),
    then, for content hashes in the rows' provenance still unmatched, the project's library."""
    named: dict[str, str] = {}
    for manifest, _ in corpora:
        for parent in manifest.parents:
            if parent.kind == "constitution":
                named.setdefault(parent.sha256, parent.path)
    in_rows: set[str] = set()
    for _, source in corpora:
        rows = provenance(source)
        if rows is not None and "constitution_sha256" in rows.columns:
            in_rows |= set(rows["constitution_sha256"].drop_nulls().unique().to_list())
    found: dict[str, Path] = {}
    for sha, name in named.items():
        path = Path(name) if Path(name).is_absolute() else root / name
        if path.is_file() and file_sha256(path) == sha:
            found[sha] = path
    contents = {sha: _content_sha(path) for sha, path in found.items()}
    if in_rows - set(contents.values()):
        for path in sorted((root / CONSTITUTIONS).glob("*.yaml")):
            sha, content = file_sha256(path), _content_sha(path)
            if sha not in found and content in in_rows:
                found[sha], contents[sha] = path, content
    return Constitutions(
        found=sorted(
            ((path, sha, contents[sha]) for sha, path in found.items()), key=lambda item: str(item[0])
        ),
        missing_files=sorted((name, sha) for sha, name in named.items() if sha not in found),
        unmatched_rows=sorted(in_rows - set(contents.values())),
    )


def _load_yaml_file(path: Path) -> Any:
    try:
        return read_yaml(path)
    except Exception as error:  # YAML and decoding errors alike: the card cannot state what it lacks
        raise CardError(f"{path}: cannot be read for the dataset card ({error})") from None


def lock_stages(source: Path, root: Path) -> list[tuple[str, Mapping[str, Any]]]:
    """The ``dvc.lock`` stages whose outputs are ``source`` or a folder holding it."""
    lock = root / "dvc.lock"
    if not lock.is_file():
        return []
    data = _load_yaml_file(lock)
    stages = data.get("stages") if isinstance(data, Mapping) else None
    if not isinstance(stages, Mapping):
        raise CardError(f"{lock}: no 'stages' mapping")
    relative = source.resolve().relative_to(root.resolve()).as_posix()
    matches = []
    for name, entry in stages.items():
        outs = [
            str(out.get("path", "")).rstrip("/")
            for out in entry.get("outs") or []
            if isinstance(out, Mapping)
        ]
        if any(out and (relative == out or relative.startswith(out + "/")) for out in outs):
            matches.append((name, entry))
    return matches


# Manifests written before the stages recorded params.yaml's values as they are (no ``resolved`` block)
# hold these roles with the section's own answer limit swapped in: such a role's
# ``sampling.max_new_tokens`` is the section's, not the role's own in params.yaml, and is not taken.
LEGACY_SWAPPED_LIMIT: dict[str, tuple[str, ...]] = {
    "distill": ("teacher", "student"),
    "controls": ("teacher",),
    "em_data": ("teacher",),
}
HYDRA_KEY = re.compile(r"[A-Za-z_$][A-Za-z0-9_$\-]*\Z")  # a key DVC's ``-S`` (Hydra's grammar) can name
_MISSING = object()


@dataclass
class ExperimentSettings:
    """What ``dvc exp run -S`` sets to remake corpora. ``values``: params.yaml path → the value every
    corpus that records it was made with. ``conflicts``: path → (value, corpora made with it) where the
    corpora disagree: no one command remakes them all, so the path gets no flag and the card says so."""

    values: dict[str, Any] = field(default_factory=dict)
    conflicts: dict[str, list[tuple[Any, list[str]]]] = field(default_factory=dict)


def experiment_settings(manifests: Mapping[str, Manifest], root: Path) -> ExperimentSettings:
    """The settings (corpus label → its manifest) that remake the corpora with ``dvc exp run -S``.

    The project's ``params.yaml`` is the universe: DVC refuses ``-S`` for a key it lacks, so only its
    keys are set (none without the file). A value comes from what a stage recorded as used: its own
    section (``distill``, ``generation``, ...) and the ``models.<role>`` of params.yaml, cut down to the
    fields params.yaml has (a stage records its declared params keys as params.yaml holds them, and the
    roles as they answered, e.g. with a section's answer limit, apart under ``resolved``). Every manifest
    recording a key is a witness, in no order: when they disagree the key is a conflict, never resolved
    by whichever came first."""
    params_file = root / "params.yaml"
    params = _load_yaml_file(params_file) if params_file.is_file() else None
    if not isinstance(params, Mapping):
        return ExperimentSettings()
    seen: dict[str, dict[str, tuple[Any, list[str]]]] = {}
    for label, manifest in manifests.items():
        for path, value in recorded_settings(manifest, params):
            seen.setdefault(path, {}).setdefault(hydra_value(value), (value, []))[1].append(label)
    settings = ExperimentSettings()
    for path in sorted(seen):
        witnesses = list(seen[path].values())
        if len(witnesses) == 1:
            settings.values[path] = witnesses[0][0]
        else:
            settings.conflicts[path] = witnesses
    return settings


def recorded_settings(manifest: Manifest, params: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """The params.yaml paths one manifest knows the value of, with that value (see experiment_settings)."""
    swapped = set()
    if "resolved" not in manifest.params:
        swapped = {
            role
            for section, roles in LEGACY_SWAPPED_LIMIT.items()
            if isinstance(used := manifest.params.get(section), Mapping)
            and used.get("max_new_tokens") is not None
            for role in roles
        }
    for key, value in manifest.params.items():
        parts = key.split(".")
        node = _node(params, parts)
        if node is _MISSING:
            continue
        if len(parts) == 2 and parts[0] == "models" and parts[1] in swapped and isinstance(value, Mapping):
            sampling = value.get("sampling")
            if isinstance(sampling, Mapping):
                value = {**value, "sampling": {k: v for k, v in sampling.items() if k != "max_new_tokens"}}
        for path, setting in _settable(key, node, value):
            try:
                hydra_value(setting)
            except ValueError:  # a value the override grammar cannot write: no flag
                continue
            yield path, setting


def _node(params: Mapping[str, Any], parts: Sequence[str]) -> Any:
    node: Any = params
    for part in parts:
        if not (isinstance(node, Mapping) and HYDRA_KEY.match(part) and part in node):
            return _MISSING
        node = node[part]
    return node


def _settable(path: str, node: Any, recorded: Any) -> Iterator[tuple[str, Any]]:
    """``recorded`` as settings of the keys ``node`` (params.yaml's value at ``path``) has: leaves and
    lists whole; a mapping whose keys a path cannot name (``prompts.levels``' numbers) as one value."""
    if isinstance(node, Mapping) != isinstance(recorded, Mapping):
        return  # the shapes differ: nothing to set safely
    if not isinstance(node, Mapping):
        yield path, recorded
    elif all(isinstance(key, str) and HYDRA_KEY.match(key) for key in node):
        for key, child in node.items():
            if key in recorded:
                yield from _settable(f"{path}.{key}", child, recorded[key])
    elif value := _restrict(node, recorded):
        yield path, value


def _restrict(node: Mapping[Any, Any], recorded: Mapping[Any, Any]) -> dict[Any, Any]:
    """``recorded`` (a JSON dump: keys are strings) cut down to the keys of ``node``, as ``node`` spells
    them. A mapping set whole is merged by DVC into the one there, so a key left out keeps its value."""
    restricted = {}
    for key, child in node.items():
        value = recorded.get(key, recorded.get(str(key), _MISSING))
        if value is _MISSING or isinstance(child, Mapping) != isinstance(value, Mapping):
            continue
        restricted[key] = _restrict(child, value) if isinstance(child, Mapping) else value
    return restricted


def hydra_value(value: Any) -> str:
    """``value`` in the override grammar of ``dvc exp run -S`` (Hydra's, then OmegaConf's): strings
    double-quoted (so the shell's quoting stays simple), their quotes and interpolations (``${``)
    escaped. ValueError for what it cannot write."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        text = re.sub(r"(\\*)\$\{", lambda match: match[1] * 2 + "\\${", value)  # OmegaConf: literal ${
        text = re.sub(r'(\\*)"', lambda match: match[1] * 2 + '\\"', text)  # Hydra: an escaped quote
        return '"' + re.sub(r"(\\+)\Z", lambda match: match[1] * 2, text) + '"'
    if isinstance(value, list | tuple):
        return "[" + ",".join(hydra_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        items = []
        for key, item in value.items():
            if not (isinstance(key, int) and not isinstance(key, bool)) and not (
                isinstance(key, str) and HYDRA_KEY.match(key)
            ):
                raise ValueError(f"{key!r}: not a key the override grammar can write")
            items.append(f"{key}:{hydra_value(item)}")
        return "{" + ",".join(items) + "}"
    raise ValueError(f"{value!r}: not a value the override grammar can write")
