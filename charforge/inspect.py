"""`charforge inspect`: a polars summary of any corpus file.

Rows, columns, counts per trait / situation / variant / diversity level, length distributions,
exact duplicates, empty fields and, for preference pairs, identical chosen/rejected and the
chosen/rejected length ratio. Constitutions get their trait and question counts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from charforge.io import (
    SourceError,
    detect_format,
    iter_jsonl,
    load_yaml,
    parse_json,
    read_text,
    unknown_format,
)
from charforge.schemas import KINDS, Constitution
from charforge.schemas.manifest import manifest_path_for
from charforge.validate import UsageError, infer_kind

COUNT_COLUMNS = (
    "variant",
    "trait_id",
    "situation",
    "diversity_level",
    "is_seed",
    "source",
    "question_id",
    "metric",
)
TOP_VALUES = 25
MESSAGE_FIELDS = {"role", "content"}


def _read_rows(path: Path, fmt: str) -> tuple[Any, pl.DataFrame | None]:
    """(first row or document, frame of rows or None for a document)."""
    if fmt == "parquet":
        try:
            frame = pl.read_parquet(path)
        except Exception as error:  # polars raises several error types for broken files
            raise SourceError(f"not a readable parquet file ({error})") from None
        return None, frame
    text = read_text(path)
    if fmt == "jsonl":
        rows = []
        for line, value in iter_jsonl(text):
            if isinstance(value, SourceError):
                raise SourceError(value.message, line)
            rows.append(value)
        return (rows[0] if rows else None), _frame(rows)
    data = load_yaml(text)[0].data if fmt == "yaml" else parse_json(text)
    if isinstance(data, list):
        return data, _frame(data)
    return data, None


def _frame(rows: list[Any]) -> pl.DataFrame:
    if not all(isinstance(row, dict) for row in rows):
        raise SourceError("rows must be objects (mappings) to be inspected")
    return pl.DataFrame(rows, infer_schema_length=None, strict=False)


def _is_messages(dtype: pl.DataType) -> bool:
    return (
        isinstance(dtype, pl.List)
        and isinstance(dtype.inner, pl.Struct)
        and {item.name for item in dtype.inner.fields} >= MESSAGE_FIELDS
    )


def _length_expr(name: str, dtype: pl.DataType) -> pl.Expr | None:
    """Characters of text per row: a string, or the summed content of a message list."""
    if dtype == pl.String:
        return pl.col(name).str.len_chars()
    if _is_messages(dtype):
        return pl.col(name).list.eval(pl.element().struct.field("content").str.len_chars()).list.sum()
    if isinstance(dtype, pl.List) and dtype.inner == pl.String:
        return pl.col(name).list.len()
    return None


def _empty_expr(name: str, dtype: pl.DataType) -> pl.Expr:
    column = pl.col(name)
    empty = column.is_null()
    if dtype == pl.String:
        empty = empty | (column.str.strip_chars() == "")
    elif _is_messages(dtype):
        blank = pl.element().struct.field("content").fill_null("").str.strip_chars() == ""
        empty = empty | (column.list.len() == 0) | column.list.eval(blank).list.any()
    elif isinstance(dtype, pl.List):
        empty = empty | (column.list.len() == 0)
    return empty.fill_null(True)


def _distribution(values: pl.Series) -> dict[str, float | int | None]:
    values = values.drop_nulls()
    if values.is_empty():
        return {"n": 0}
    return {
        "n": len(values),
        "min": values.min(),
        "p25": values.quantile(0.25, "nearest"),
        "median": values.quantile(0.5, "nearest"),
        "mean": round(float(values.mean() or 0), 2),
        "p75": values.quantile(0.75, "nearest"),
        "max": values.max(),
    }


def summarise_frame(frame: pl.DataFrame) -> dict[str, Any]:
    schema = frame.schema
    summary: dict[str, Any] = {
        "rows": frame.height,
        "columns": {name: str(dtype) for name, dtype in schema.items()},
    }
    counts: dict[str, dict[str, int]] = {}
    for name in COUNT_COLUMNS:
        if name in schema and not isinstance(schema[name], pl.List | pl.Struct):
            table = frame.get_column(name).value_counts(sort=True).head(TOP_VALUES)
            counts[name] = {str(value): int(count) for value, count in table.iter_rows()}
    summary["counts"] = counts

    lengths: dict[str, Any] = {}
    for name, dtype in schema.items():
        expr = _length_expr(name, dtype)
        if expr is not None:
            unit = "items" if isinstance(dtype, pl.List) and not _is_messages(dtype) else "chars"
            lengths[name] = {"unit": unit, **_distribution(frame.select(expr.alias("n")).get_column("n"))}
    summary["lengths"] = lengths

    hashes = frame.hash_rows(seed=0) if frame.width else pl.Series([], dtype=pl.UInt64)
    summary["exact_duplicate_rows"] = int(frame.height - hashes.n_unique()) if frame.height else 0
    empties = frame.select(_empty_expr(name, dtype).sum().alias(name) for name, dtype in schema.items())
    summary["empty"] = {name: int(value) for name, value in empties.row(0, named=True).items() if value}

    if (
        "chosen" in schema
        and "rejected" in schema
        and _is_messages(schema["chosen"])
        and _is_messages(schema["rejected"])
    ):
        chosen, rejected = (
            _length_expr("chosen", schema["chosen"]),
            _length_expr("rejected", schema["rejected"]),
        )
        assert chosen is not None and rejected is not None
        pairs = frame.select(
            (pl.col("chosen") == pl.col("rejected")).sum().alias("identical"),
            (chosen / rejected).alias("ratio"),
        )
        summary["pairs"] = {
            "identical_chosen_rejected": int(pairs.get_column("identical")[0] or 0),
            "chosen_rejected_length_ratio": _distribution(
                pairs.get_column("ratio").filter(pairs.get_column("ratio").is_finite())
            ),
        }
    return summary


def summarise_constitution(data: Any) -> dict[str, Any]:
    """Trait and question counts; the hash when the constitution is valid."""
    traits = data.get("traits") if isinstance(data, dict) else None
    traits = traits if isinstance(traits, list) else []
    per_trait = [
        {
            "id": trait.get("id") if isinstance(trait, dict) else None,
            "questions": len(trait.get("questions") or []) if isinstance(trait, dict) else 0,
        }
        for trait in traits
    ]
    summary: dict[str, Any] = {
        "name": data.get("name") if isinstance(data, dict) else None,
        "constitution_kind": data.get("kind") if isinstance(data, dict) else None,
        "traits": len(traits),
        "questions": sum(item["questions"] for item in per_trait),
        "per_trait": per_trait,
    }
    try:
        summary["sha256"] = Constitution.model_validate(data).sha256()
    except Exception:
        summary["sha256"] = None  # invalid: `charforge validate` says why
    return summary


def inspect_file(path: Path, kind: str | None = None) -> dict[str, Any]:
    """A JSON-ready summary of ``path``. Raises SourceError (unreadable) or UsageError."""
    fmt = detect_format(path, text_as_json=kind is not None)  # a .txt holding JSON, as validate reads it
    if fmt is None:
        raise UsageError(unknown_format(path))
    sample, frame = _read_rows(path, fmt)
    columns = frame.columns if fmt == "parquet" and frame is not None else None
    kind = kind or infer_kind(path, sample, columns)
    if kind is not None and kind not in KINDS:
        raise UsageError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    result: dict[str, Any] = {"file": str(path), "format": fmt, "kind": kind}
    if frame is None:
        if kind == "constitution":
            result.update(summarise_constitution(sample))
        elif isinstance(sample, dict):
            result["document"] = sample
        return result
    result.update(summarise_frame(frame))
    manifest_path = manifest_path_for(path)
    if manifest_path.is_file() and manifest_path != path:
        try:
            manifest = parse_json(read_text(manifest_path))
        except SourceError as error:
            manifest = {"error": error.message}
        result["manifest"] = manifest
    return result
