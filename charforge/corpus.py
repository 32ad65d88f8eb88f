"""Writing corpora with their manifests, and the canonical content hash (docs/design.md §4)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from charforge import __version__
from charforge.io import atomic_path, atomic_write_text, canonical_json
from charforge.schemas import KINDS, Manifest, ParentArtifact
from charforge.schemas.manifest import MANIFEST_SCHEMA_VERSION, manifest_path_for

HASH_BATCH_ROWS = 50_000


def drop_nulls(value: Any) -> Any:
    """Null map entries mean "absent": JSONL omits them, parquet structs read them back as null.
    An empty map is absent too: parquet cannot store a struct with no fields."""
    if isinstance(value, Mapping):
        kept = {key: drop_nulls(item) for key, item in value.items() if item is not None}
        return {key: item for key, item in kept.items() if not (isinstance(item, Mapping) and not item)}
    if isinstance(value, list | tuple):
        return [drop_nulls(item) for item in value]
    return value


def canonical_row(row: Mapping[str, Any]) -> str:
    return canonical_json(drop_nulls(row))


def _sort_key(row: Mapping[str, Any], canonical: str) -> tuple[str, str]:
    row_id = row.get("id")
    return (row_id if isinstance(row_id, str) else "", canonical)


def content_sha256(rows: Iterable[Mapping[str, Any]]) -> str:
    """sha256 over the canonical rows sorted by id: independent of file format and row order."""
    keyed = sorted((_sort_key(row, text), text) for row in rows for text in (canonical_row(row),))
    digest = hashlib.sha256()
    for _, text in keyed:
        digest.update(text.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def parquet_content_sha256(path: Path) -> str:
    """The same hash for a parquet file, streaming sorted batches instead of loading every row."""
    frame = pl.scan_parquet(path)
    if "id" not in frame.collect_schema().names():
        return content_sha256(pl.read_parquet(path).iter_rows(named=True))
    ordered = frame.sort("id", nulls_last=False).collect(engine="streaming")
    digest = hashlib.sha256()
    pending: list[tuple[tuple[str, str], str]] = []
    previous_id: str | None = None
    for start in range(0, len(ordered), HASH_BATCH_ROWS):
        for row in ordered.slice(start, HASH_BATCH_ROWS).iter_rows(named=True):
            text = canonical_row(row)
            key = _sort_key(row, text)
            # rows sharing an id (invalid, but hash them deterministically) are ordered by content
            if pending and key[0] != previous_id:
                for _, done in sorted(pending):
                    digest.update(done.encode("utf-8") + b"\n")
                pending = []
            pending.append((key, text))
            previous_id = key[0]
    for _, done in sorted(pending):
        digest.update(done.encode("utf-8") + b"\n")
    return digest.hexdigest()


def rows_to_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """An arrow table with a column for every key of any row (``Table.from_pylist`` would take the
    columns of the first row only and silently drop keys that first appear later)."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return pa.Table.from_pydict({name: [row.get(name) for row in rows] for name in columns})


def _portable(value: Any) -> Any:
    """``value`` with every string naming a folded model's folder (a path into this checkout's cache)
    replaced by the fold's name, ``fold:<key>``: a manifest records what a model is, not where."""
    if isinstance(value, Mapping):
        return {key: _portable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_portable(item) for item in value]
    if isinstance(value, str) and "/" in value and "\n" not in value and len(value) < 4096:
        from charforge.train.fold import portable_model

        return portable_model(value)
    return value


def write_corpus(
    rows: Sequence[BaseModel | Mapping[str, Any]],
    path: Path,
    kind: str,
    *,
    params: Mapping[str, Any] | None = None,
    parents: Sequence[ParentArtifact] = (),
    rejected: Mapping[str, int] | None = None,
    variant: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    root: Path | None = None,
) -> Manifest:
    """Validate ``rows`` as charforge records of ``kind``, write them as parquet sorted by id, then
    write the manifest beside them. Both writes are atomic; the manifest is written last, so a
    crash in between leaves a manifest that `charforge validate` reports as not matching.

    The manifest is a DVC output, the same in every checkout of the project: ``parents`` are recorded
    relative to ``root`` (the project folder) when it is given, and a folded model named in ``params``
    or ``metrics`` by its folder in the cache is recorded as ``fold:<key>``. The rows are written as
    given: their content hash depends on them alone."""
    spec = KINDS[kind]
    model = spec.row_model(charforge=True)
    records = [model.model_validate(row if isinstance(row, Mapping) else row.model_dump()) for row in rows]
    dumped = [drop_nulls(record.model_dump(mode="json", exclude_none=True)) for record in records]
    dumped.sort(key=lambda row: _sort_key(row, canonical_row(row)))
    table = rows_to_table(dumped)
    with atomic_path(path) as temp:
        pq.write_table(table, temp)
    manifest = Manifest(
        schema_version=MANIFEST_SCHEMA_VERSION,
        producer="charforge",
        kind=kind,
        data_file=path.name,
        variant=variant,
        rows=len(dumped),
        content_sha256=content_sha256(dumped),
        params=_portable(dict(params or {})),
        parents=[parent.under(root) for parent in parents] if root is not None else list(parents),
        tool_version=__version__,
        rejected=dict(rejected or {}),
        metrics=_portable(dict(metrics or {})),
    )
    atomic_write_text(manifest_path_for(path), manifest.model_dump_json(indent=2) + "\n")
    return manifest
