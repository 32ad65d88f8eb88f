"""The facts a dataset card states, gathered from what made the corpora: manifests, the rows' provenance,
the constitution files, ``dvc.lock`` and ``params.yaml``. ``charforge.card`` renders them."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq
import yaml

from charforge.io import file_sha256, read_text
from charforge.schemas import Manifest

UNKNOWN_LICENCE = "unknown — check before publishing"
LICENCE_KEYS = ("teacher_licence", "teacher_license")
SMOKE_MODEL = "embedded:smollm2-135m-instruct"
CONSTITUTIONS = Path("corpora/constitutions")


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
        return Constitution.model_validate(yaml.safe_load(read_text(path))).sha256()
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
        return yaml.safe_load(read_text(path))
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


def _flatten(prefix: str, value: Any) -> Iterable[tuple[str, Any]]:
    if isinstance(value, Mapping) and value:
        for key, item in value.items():
            yield from _flatten(f"{prefix}.{key}", item)
    else:
        yield prefix, value


def experiment_settings(manifests: Sequence[Manifest], root: Path) -> dict[str, Any]:
    """``params.yaml`` paths → values the corpora were made with (for ``dvc exp run -S``): every leaf of
    the manifests' params whose section exists in the project's params.yaml (all when there is none)."""
    params_file = root / "params.yaml"
    loaded = _load_yaml_file(params_file) if params_file.is_file() else None
    sections = set(loaded) if isinstance(loaded, Mapping) else None
    settings: dict[str, Any] = {}
    for manifest in manifests:
        for key, value in manifest.params.items():
            if key != "variant" and (sections is None or key.split(".")[0] in sections):
                for path, leaf in _flatten(key, value):
                    settings.setdefault(path, leaf)
    return settings
