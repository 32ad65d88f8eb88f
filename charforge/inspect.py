"""`charforge inspect`: a polars summary of any corpus file.

Rows, columns, counts per trait / situation / variant / diversity level, length distributions,
exact duplicates, empty fields and, for preference pairs, identical chosen/rejected and the
chosen/rejected length ratio (of the answers alone where the prompt is implicit). Pairs and
conversations are named by their TRL format (``row_format``). Constitutions get their trait and
question counts.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import polars as pl

from charforge.io import (
    SourceError,
    detect_format,
    iter_jsonl_file,
    load_yaml,
    parse_json,
    read_text,
    require_regular_file,
    unknown_format,
)
from charforge.schemas import KINDS, Constitution
from charforge.schemas.manifest import manifest_path_for
from charforge.schemas.messages import MESSAGES, TEXT, implicit_prompt_length
from charforge.validate import NO_ROWS, UsageError, infer_kind

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
    """(first row or document, frame of rows or None for a document). What `validate` calls an
    empty file or a file without rows is a SourceError here too."""
    if fmt == "parquet":
        from charforge.fastcheck import plain_strings

        try:
            frame = pl.read_parquet(path)
        except Exception as error:  # polars raises several error types for broken files
            raise SourceError(f"not a readable parquet file ({_first_line(error)})") from None
        if frame.height == 0:
            raise SourceError(NO_ROWS)
        return None, plain_strings(frame)
    if fmt == "jsonl":  # streamed: a line never splits at U+2028, a huge line is refused
        rows: list[Any] = []
        lines: list[int] = []
        for line, value in iter_jsonl_file(path):
            if isinstance(value, SourceError):
                raise SourceError(value.message, line)
            if not isinstance(value, dict):
                raise SourceError(_NOT_A_ROW, line)
            rows.append(value)
            lines.append(line)
        if not rows:
            raise SourceError("file is empty")
        return rows[0], _frame(rows, lines.__getitem__)
    text = read_text(path)
    if not text.strip():
        raise SourceError("file is empty")
    document = load_yaml(text)[0] if fmt == "yaml" else None
    data = document.data if document is not None else parse_json(text)
    if data is None:
        raise SourceError("file holds no data")
    if not isinstance(data, list):
        return data, None
    if not data:
        raise SourceError(NO_ROWS)

    @cache
    def located() -> Any:
        return document if document is not None else _json_document(text)

    def line_of(index: int) -> int | None:
        found = located()
        return found.line_of((index,)) if found is not None else None

    return data, _frame(data, line_of)


_NOT_A_ROW = "rows must be objects (mappings) to be inspected"


def _json_document(text: str) -> Any:
    """JSON read as YAML, for the line of a row; only on the way to an error. None where that fails."""
    try:
        return load_yaml(text)[0]
    except SourceError:
        return None


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _frame(rows: list[Any], line_of: Callable[[int], int | None]) -> pl.DataFrame:
    """One polars frame of the rows; a located SourceError where they cannot share one (a row that is
    no mapping, a column that is a message list in one row and a string in another)."""
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise SourceError(_NOT_A_ROW, line_of(index))
    try:
        return pl.DataFrame(rows, infer_schema_length=None, strict=False)
    except Exception as error:  # polars cannot build one table from these rows: say where they differ
        first: dict[str, tuple[str, int]] = {}
        for index, row in enumerate(rows):
            for name, value in row.items():
                shape = _shape(value)
                if shape is None:
                    continue
                seen, at = first.setdefault(name, (shape, index))
                if seen != shape:
                    line = line_of(at)
                    where = f"line {line}" if line is not None else f"row {at}"
                    raise SourceError(
                        f"{shape} here but {seen} at {where}: one table needs one type per column "
                        "(`charforge validate` lists every row at fault)",
                        line_of(index),
                        name,
                    ) from None
        raise SourceError(f"rows cannot be put in one table ({_first_line(error)})") from None


NOUNS = {dict: "mapping", list: "list", str: "string", bool: "boolean", int: "number", float: "number"}


def _shape(value: Any) -> str | None:
    """What a value is, one level into lists (a message list is a list of mappings); None: no telling."""
    if value is None or value == []:
        return None
    item = next((item for item in value if item is not None), None) if isinstance(value, list) else None
    if item is not None:
        return f"a list of {NOUNS.get(type(item), type(item).__name__)}s"
    return f"a {NOUNS.get(type(value), type(value).__name__)}"


def _is_messages(dtype: pl.DataType) -> bool:
    """A list of {role, content} mappings whose content is text (not numbers, say, in a broken file)."""
    if not isinstance(dtype, pl.List) or not isinstance(dtype.inner, pl.Struct):
        return False
    fields = {item.name: item.dtype for item in dtype.inner.fields}
    return set(fields) >= MESSAGE_FIELDS and fields["content"] == pl.String


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
    summary["empty"] = (
        {name: int(value) for name, value in empties.row(0, named=True).items() if value} if schema else {}
    )

    pairs = _pairs_summary(frame)
    if pairs is not None:
        summary["pairs"] = pairs
    return summary


def _pairs_summary(frame: pl.DataFrame) -> dict[str, Any] | None:
    """Identical chosen/rejected and their length ratio, for pairs in any TRL format: the answers'
    characters, after the shared prompt where it is implicit (else the ratio would mostly measure it)."""
    schema = frame.schema
    if "chosen" not in schema or "rejected" not in schema:
        return None
    shape = _column_shape(schema["chosen"])
    if shape is None or shape != _column_shape(schema["rejected"]):
        return None
    identical = frame.select((pl.col("chosen") == pl.col("rejected")).sum()).item()
    if "prompt" in schema:
        chosen, rejected = (
            _length_expr("chosen", schema["chosen"]),
            _length_expr("rejected", schema["rejected"]),
        )
        assert chosen is not None and rejected is not None
        ratio = frame.select((chosen / rejected).alias("ratio")).get_column("ratio")
    else:
        ratio = pl.Series(
            "ratio",
            [
                _answer_ratio(chosen, rejected, shape)
                for chosen, rejected in frame.select("chosen", "rejected").iter_rows()
            ],
            dtype=pl.Float64,
        )
    return {
        "identical_chosen_rejected": int(identical or 0),
        "chosen_rejected_length_ratio": _distribution(ratio.filter(ratio.is_finite())),
    }


def _answer_ratio(chosen: Any, rejected: Any, shape: str) -> float | None:
    """Characters of the chosen answer over the rejected one's, after the prompt they share; None where
    the pair has no such prompt (`charforge validate` says why)."""
    if chosen is None or rejected is None:
        return None
    end = implicit_prompt_length(chosen, rejected)
    if not end:
        return None

    def characters(answer: Any) -> int:
        if shape == TEXT:
            return len(answer)
        return sum(len((message or {}).get("content") or "") for message in answer)

    answer = characters(rejected[end:])
    return characters(chosen[end:]) / answer if answer else None


def _column_shape(dtype: pl.DataType) -> str | None:
    """``value_shape`` of a polars column: a string column is text, a message list messages."""
    if dtype == pl.String:
        return TEXT
    return MESSAGES if _is_messages(dtype) else None


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
    require_regular_file(path)  # a FIFO or a device is refused before anything opens it
    sample, frame = _read_rows(path, fmt)
    columns = frame.columns if fmt == "parquet" and frame is not None else None
    kind = kind or infer_kind(path, sample, columns)
    if kind is not None and kind not in KINDS:
        raise UsageError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    result: dict[str, Any] = {"file": str(path), "format": fmt, "kind": kind}
    spec = KINDS.get(kind) if kind is not None else None
    if (
        frame is not None and spec is not None and spec.formats
    ):  # TRL's name for the rows, as `validate` says it
        found = spec.row_format({name: _column_shape(dtype) for name, dtype in frame.schema.items()})
        result["row_format"] = found.name if found is not None else None
    if frame is None:
        if kind == "constitution":
            result.update(summarise_constitution(sample))
        elif isinstance(sample, dict):
            result["document"] = sample
        else:
            found = NOUNS.get(type(sample), type(sample).__name__)
            raise SourceError(
                f"a {found} at the top level: neither a document (a mapping) nor a list of rows"
            )
        return result
    result.update(summarise_frame(frame))
    manifest_path = manifest_path_for(path)
    if manifest_path.is_file() and manifest_path != path:
        try:
            manifest = parse_json(read_text(manifest_path))
        except SourceError as error:
            manifest = {"error": error.message}
        result["manifest"] = manifest if isinstance(manifest, dict) else {"error": "not a JSON object"}
    return result
