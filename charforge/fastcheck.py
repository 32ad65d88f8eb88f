"""Validating parquet record files fast and in bounded memory.

Row-by-row pydantic costs ~37x a parquet read (docs/design.md §7). Instead, each record batch is checked
with vectorised polars expressions that flag every row that *might* be invalid (a sound
over-approximation of the schema), and only flagged rows go through pydantic, which stays the
single authority on what is an error and how it is worded. Columns without a vectorised rule are
checked once per distinct value. Memory is bounded by the batch size, never by the file.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Annotated, Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from pydantic.fields import FieldInfo

from charforge.io import SourceError
from charforge.schemas import Kind
from charforge.schemas.base import RECORD_ID_PATTERN, SLUG_PATTERN, _check_record_id, _check_slug
from charforge.schemas.messages import ROLES
from charforge.validate import FileReport, check_model

BATCH_ROWS = 16_384  # measured: faster and ~25 % less memory than 64k on 1M pairs
MAX_CACHED_VALUES = 100_000

# Message-list columns per kind and the turn rule their validator enforces (schemas/messages.py).
MESSAGE_RULES: dict[str, dict[str, str]] = {
    "pairs": {"prompt": "prompt", "chosen": "completion", "rejected": "completion"},
    "conversations": {"messages": "conversation"},
    "prompts": {"prompt": "prompt"},
}
MESSAGE_DTYPE = pl.List(pl.Struct({"role": pl.String, "content": pl.String}))
# Python's str.strip() removes what str.isspace() calls space: Unicode White_Space plus \x1c-\x1f.
BLANK_PATTERN = r"^[\s\x1c-\x1f]*$"
STRING_PATTERNS: dict[Callable[[str], str], str] = {
    _check_slug: SLUG_PATTERN,
    _check_record_id: RECORD_ID_PATTERN,
}


def plain_strings(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with categorical and enum columns (dictionary-encoded strings in parquet), nested ones
    too, cast to plain strings: the string expressions and the message layout check expect those."""
    casts = {name: plain for name, dtype in frame.schema.items() if (plain := _plain_dtype(dtype)) != dtype}
    return frame.cast(casts) if casts else frame  # type: ignore[arg-type]


def _plain_dtype(dtype: pl.DataType) -> pl.DataType:
    if isinstance(dtype, pl.Categorical | pl.Enum):
        return pl.String()
    if isinstance(dtype, pl.List):
        return pl.List(_plain_dtype(dtype.inner))
    if isinstance(dtype, pl.Array):
        return pl.Array(_plain_dtype(dtype.inner), dtype.shape)
    if isinstance(dtype, pl.Struct):
        return pl.Struct({item.name: _plain_dtype(item.dtype) for item in dtype.fields})
    return dtype


def invalid_values(batch: pa.RecordBatch) -> tuple[pa.RecordBatch, list[tuple[int, str, str]]]:
    """(the batch with invalid values nulled, (row, column, message) of each): pyarrow reads strings
    without checking their UTF-8, and polars panics on invalid ones as it converts them to Python.
    Full validation costs one pass over the bytes; rows are looked at one by one only when it fails."""
    problems: list[tuple[int, str, str]] = []
    columns = []
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        bad = _invalid_rows(column)
        for index, message in bad.items():
            problems.append((index, name, message))
        if bad:  # `take` with a null index gives a null: the row stays, its value is gone
            column = column.take(pa.array([None if i in bad else i for i in range(len(column))], pa.int64()))
        columns.append(column)
    if not problems:
        return batch, problems
    return pa.RecordBatch.from_arrays(columns, schema=batch.schema), sorted(problems)


def _invalid_rows(column: pa.Array) -> dict[int, str]:
    try:
        column.validate(full=True)
        return {}
    except pa.ArrowInvalid:
        pass
    bad: dict[int, str] = {}
    for index in range(len(column)):
        try:
            column.take([index]).validate(full=True)  # `take` copies just this row's data
        except pa.ArrowInvalid as error:
            text = str(error)
            bad[index] = "a string that is not valid UTF-8" if "UTF8" in text else f"invalid data ({text})"
    return bad


def parquet_columns(path: Path) -> list[str]:
    try:
        return list(pq.read_schema(path).names)
    except (OSError, pa.ArrowException) as error:
        raise SourceError(f"not a readable parquet file ({error})") from None


def _message_suspect(column: str, rule: str) -> pl.Expr:
    """True for rows whose message list might break the schema or the turn rule."""
    messages = pl.col(column)
    roles = messages.list.eval(pl.element().struct.field("role"))
    contents = messages.list.eval(pl.element().struct.field("content"))
    suspect = (
        messages.is_null()
        | (messages.list.len() == 0)
        | messages.list.eval(pl.element().is_null()).list.any()
        | roles.list.eval(pl.element().is_null() | ~pl.element().is_in(list(ROLES))).list.any()
        | contents.list.eval(pl.element().is_null() | pl.element().str.contains(BLANK_PATTERN)).list.any()
        | roles.list.slice(1).list.contains("system")
    )
    if rule == "prompt":
        suspect = suspect | (roles.list.last() != "user")
    elif rule == "completion":
        suspect = suspect | (roles.list.count_matches("assistant") != messages.list.len())
    elif rule == "conversation":
        suspect = suspect | ~roles.list.contains("assistant")
    else:  # pragma: no cover - programming error
        raise ValueError(rule)
    return suspect.fill_null(True)


def _string_pattern(info: FieldInfo) -> tuple[str, bool] | None:
    """(regex, nullable) when the field is a slug/id string a regex checks exactly; else None."""
    annotation: Any = info.annotation
    metadata = list(info.metadata)
    nullable = False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        nullable = len(members) < len(typing.get_args(annotation))
        if len(members) != 1:
            return None
        annotation = members[0]
    if typing.get_origin(annotation) is Annotated:
        annotation, *extra = typing.get_args(annotation)
        metadata += extra
    if annotation is not str:
        return None
    patterns = [STRING_PATTERNS.get(getattr(item, "func", None)) for item in metadata]
    if len(metadata) != 1 or patterns[0] is None:
        return None
    return patterns[0], nullable


def _pattern_suspect(column: str, pattern: str, nullable: bool) -> pl.Expr:
    # a null matches no pattern: it is suspect unless the field may be null
    return (~pl.col(column).str.contains(pattern)).fill_null(not nullable)


@cache
def _column_model(model: type[BaseModel], column: str) -> type[BaseModel]:
    """A one-field model with the row model's field, to validate a column's distinct values."""
    info = model.model_fields[column]
    return create_model(  # type: ignore[call-overload,no-any-return]
        f"{model.__name__}Column",
        __config__=ConfigDict(extra="forbid", strict=True),
        value=(info.annotation, info),
    )


def _fast_path_applies(kind: Kind, model: type[BaseModel]) -> bool:
    """Vectorised rules stand in for the model only if it has no cross-field validators."""
    decorators = model.__pydantic_decorators__
    if decorators.model_validators:
        return False
    message_columns = set(MESSAGE_RULES.get(kind.name, {}))
    for validator in decorators.field_validators.values():
        if not set(validator.info.fields) <= message_columns:
            return False
    return kind.name in MESSAGE_RULES


class _ValueCache:
    """Which distinct values of a column are valid, keyed by polars' 64-bit value hash."""

    def __init__(self) -> None:
        self.verdicts: dict[int, bool] = {}

    def bad_rows(self, frame: pl.DataFrame, column: str, model: type[BaseModel]) -> pl.Series:
        hashes = frame.get_column(column).hash(seed=0)
        distinct = pl.DataFrame({"h": hashes}).with_row_index("i").unique("h", keep="first")
        unseen = distinct.filter(~pl.col("h").is_in(list(self.verdicts)))
        if len(self.verdicts) + len(unseen) > MAX_CACHED_VALUES:
            self.verdicts.clear()
            unseen = distinct
        values = frame.get_column(column).gather(unseen.get_column("i")).to_list()
        checker = _column_model(model, column)
        for value_hash, value in zip(unseen.get_column("h").to_list(), values, strict=True):
            try:
                checker.model_validate({"value": value})
                self.verdicts[value_hash] = True
            except ValidationError:
                self.verdicts[value_hash] = False
        bad = [value_hash for value_hash, ok in self.verdicts.items() if not ok]
        return hashes.is_in(bad)


def validate_parquet_rows(path: Path, kind: Kind, model: type[BaseModel], report: FileReport) -> None:
    """Validate every row of a parquet file; sets ``report.rows``."""
    try:
        parquet = pq.ParquetFile(path)
        names = parquet.schema_arrow.names
    except (OSError, pa.ArrowException) as error:
        report.add(None, "-", f"not a readable parquet file ({error})")
        return
    fields = model.model_fields
    for name in names:
        if name not in fields:
            report.add(None, name, f"unknown column (not part of the {kind.name} schema)")
    missing = frozenset(name for name, info in fields.items() if info.is_required() and name not in names)
    for name in sorted(missing):
        report.add(None, name, "required column is missing")
    known = [name for name in names if name in fields]
    if not known:
        report.rows = parquet.metadata.num_rows
        return

    fast = _fast_path_applies(kind, model)
    rules = MESSAGE_RULES.get(kind.name, {})
    caches = {name: _ValueCache() for name in known}
    unique_values: list[pl.Series] = []
    offset = 0
    try:
        batches = parquet.iter_batches(batch_size=BATCH_ROWS, columns=known, use_threads=True)
        for batch in batches:
            batch, unreadable = invalid_values(batch)
            nulled: dict[int, set[str]] = {}  # reported here: not a second time as nulls
            for index, name, message in unreadable:
                report.add(f"row {offset + index}", name, message)
                nulled.setdefault(index, set()).add(name)
            frame = pl.from_arrow(batch)
            assert isinstance(frame, pl.DataFrame)
            frame = plain_strings(frame)
            suspect = _suspect_rows(frame, fields, rules, caches, model) if fast else None
            if suspect is not None and nulled:  # their other columns still go through pydantic
                suspect = suspect | pl.Series([index in nulled for index in range(len(frame))])
            rows = frame if suspect is None else frame.filter(suspect)
            indices = range(len(frame)) if suspect is None else suspect.arg_true().to_list()
            for index, row in zip(indices, rows.iter_rows(named=True), strict=True):
                skip = missing | nulled.get(index, set())
                check_model(model, row, report, lambda loc, i=offset + index: f"row {i}", skip)
            if kind.unique_field in frame.columns:
                unique_values.append(frame.get_column(kind.unique_field))
            offset += len(frame)
    except (OSError, pa.ArrowException) as error:
        report.add(f"row {offset}", "-", f"parquet data unreadable from here on ({error})")
    report.rows = offset
    if unique_values:
        _report_duplicates(pl.concat(unique_values), kind.unique_field or "", report)


def _suspect_rows(
    frame: pl.DataFrame,
    fields: dict[str, FieldInfo],
    rules: dict[str, str],
    caches: dict[str, _ValueCache],
    model: type[BaseModel],
) -> pl.Series:
    expressions: list[pl.Expr] = []
    masks: list[pl.Series] = []
    for name, dtype in frame.schema.items():
        if name in rules:
            if dtype == MESSAGE_DTYPE or _same_message_struct(dtype):
                expressions.append(_message_suspect(name, rules[name]))
            else:
                return pl.Series([True] * len(frame))  # unexpected layout: let pydantic decide
            continue
        pattern = _string_pattern(fields[name])
        if pattern is not None and dtype == pl.String:
            expressions.append(_pattern_suspect(name, *pattern))
        else:
            masks.append(caches[name].bad_rows(frame, name, model))
    suspect = frame.select(pl.any_horizontal(expressions).alias("s")).get_column("s") if expressions else None
    for mask in masks:
        suspect = mask if suspect is None else suspect | mask
    return suspect if suspect is not None else pl.Series([False] * len(frame))


def _same_message_struct(dtype: pl.DataType) -> bool:
    if not isinstance(dtype, pl.List) or not isinstance(dtype.inner, pl.Struct):
        return False
    return {item.name: item.dtype for item in dtype.inner.fields} == {"role": pl.String, "content": pl.String}


def _report_duplicates(values: pl.Series, name: str, report: FileReport) -> None:
    frame = (
        pl.DataFrame({"v": values})
        .with_row_index("row")
        .filter(pl.col("v").is_not_null() & pl.col("v").is_duplicated())
    )
    first: dict[str, int] = {}
    for row, value in frame.iter_rows():
        if value in first:
            report.add(f"row {row}", name, f"duplicate {name} {value!r} (first at row {first[value]})")
        else:
            first[value] = row
