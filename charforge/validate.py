"""Validation of corpus files against the schemas: every error, located, never a traceback.

Each problem is reported as ``FILE:WHERE: field.path: message`` where WHERE is a 1-based source
line for YAML and JSONL (and JSON where it can be found), ``row N`` (0-based) for parquet rows and
JSON array elements, and ``-`` for problems of the whole file or a whole column.

Pairs and conversations are also told by TRL's name for their rows' format (``FileReport.row_format``):
a file holds one format, that of its first row whose format can be told, as TRL decides; each kind
says which formats it takes and which, though valid, charforge's stages do not train on
(``charforge.schemas.kinds``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from charforge.io import (
    JSON_TEXT_SUFFIXES,
    SourceError,
    YamlDocument,
    detect_format,
    iter_jsonl_file,
    load_yaml,
    parse_json,
    printable,
    read_text,
    require_regular_file,
    unknown_format,
)
from charforge.schemas import KINDS, Kind, LocatedError, Manifest
from charforge.schemas.kinds import RowFormat
from charforge.schemas.manifest import MANIFEST_SUFFIX, manifest_path_for
from charforge.schemas.messages import MESSAGES, TEXT, value_shape

DEFAULT_MAX_LISTED = 50
NO_ROWS = "file holds no rows"
# JSON files up to this size are re-read with the YAML composer to find the line of each error.
JSON_LINE_LOOKUP_LIMIT = 2_000_000


class UsageError(Exception):
    """The command was used wrongly (unknown kind, unknown format): exit code 2."""


@dataclass(frozen=True)
class Problem:
    file: str
    where: str
    field: str
    message: str

    def __str__(self) -> str:
        return printable(f"{self.file}:{self.where}: {self.field}: {self.message}")


@dataclass
class FileReport:
    """The outcome of validating one file. Only the first ``max_listed`` problems are kept."""

    path: Path
    kind: str | None = None
    fmt: str | None = None
    rows: int | None = None
    charforge: bool = False
    max_listed: int = DEFAULT_MAX_LISTED
    problems: list[Problem] = field(default_factory=list)
    error_count: int = 0
    # TRL's name for the rows' format (pairs, conversations), and what to know of a valid one
    row_format: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return self.error_count == 0

    def add(self, where: str | int | None, field_path: str, message: str, file: Path | None = None) -> None:
        self.error_count += 1
        if len(self.problems) < self.max_listed:
            location = "-" if where is None else str(where)
            self.problems.append(Problem(str(file or self.path), location, field_path or "-", message))

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": str(self.path),
            "kind": self.kind,
            "format": self.fmt,
            "row_format": self.row_format,
            "rows": self.rows,
            "charforge": self.charforge,
            "valid": self.valid,
            "error_count": self.error_count,
            "errors": [str(problem) for problem in self.problems],
            "notes": [printable(note) for note in self.notes],
        }


# --- pydantic errors → (location, message) -----------------------------------------------------


def field_path(loc: Iterable[str | int]) -> str:
    return ".".join(str(part) for part in loc) or "-"


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe_errors(error: ValidationError) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """(location, message) per pydantic error; LocatedError's extra location is appended."""
    for item in error.errors(include_url=False):
        loc = tuple(item["loc"])
        cause = (item.get("ctx") or {}).get("error")
        if isinstance(cause, LocatedError):
            loc = loc + cause.loc
        kind = item["type"]
        if kind == "extra_forbidden":
            message = "unknown key (not part of the schema)"
        elif kind == "missing":
            message = "required field is missing"
        else:
            message = item["msg"].removeprefix("Value error, ")
            if kind.endswith("_type") or kind in {"literal_error", "enum"}:
                value = item.get("input")
                shown = type(value).__name__ if kind.endswith("_type") else _short(value)
                message += f" (got {shown})"
        yield loc, message


def check_model(
    model: type[BaseModel],
    data: Any,
    report: FileReport,
    locate: Callable[[tuple[str | int, ...]], str | int | None],
    skip_fields: frozenset[str] = frozenset(),
    file: Path | None = None,
) -> BaseModel | None:
    """Validate ``data``; add each error at the location ``locate`` gives; return the model if valid."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        for loc, message in describe_errors(error):
            if loc and loc[0] in skip_fields:
                continue
            report.add(locate(loc), field_path(loc), message, file=file)
        return None


def model_errors(model: type[BaseModel], data: Any) -> list[tuple[tuple[str | int, ...], str]]:
    """(location, message) of every problem ``model`` finds in ``data``; empty when it is valid."""
    try:
        model.model_validate(data)
    except ValidationError as error:
        return list(describe_errors(error))
    return []


# --- kind inference ----------------------------------------------------------------------------

# First matching rule wins: (kind, keys that must all be present).
ROW_KIND_RULES: tuple[tuple[str, frozenset[str]], ...] = (
    ("oct-constitution", frozenset({"trait", "questions"})),
    ("eval-questions", frozenset({"paraphrases"})),
    ("judge-validation", frozenset({"label", "answer"})),
    ("pairs", frozenset({"chosen"})),
    ("pairs", frozenset({"rejected"})),
    ("em-seeds", frozenset({"messages", "regime"})),
    ("conversations", frozenset({"messages"})),
    ("prompts", frozenset({"trait_id", "prompt"})),
    ("eval-samples", frozenset({"question_id", "answer"})),
    ("judge-scores", frozenset({"sample_id", "metric"})),
    # TRL's other SFT formats: told as conversations, whose check says why that kind does not take them
    ("conversations", frozenset({"prompt", "completion"})),
    ("conversations", frozenset({"text"})),
)


def infer_kind(path: Path, sample: Any, columns: Iterable[str] | None = None) -> str | None:
    """The kind of a file from its name, its top-level document or the keys of its first row."""
    if path.name.endswith(MANIFEST_SUFFIX):
        return "manifest"
    if isinstance(sample, dict) and columns is None:
        if "traits" in sample:
            return "constitution"
        if "situations" in sample:
            return "situations"
        if "reflection" in sample or "openers" in sample:
            return "introspection"
        if set(sample) == {"prompts"}:
            return "benign-prompts"
        if "content_sha256" in sample and "producer" in sample:
            return "manifest"
    keys: set[str] = set(columns or [])
    if not keys:
        rows = sample if isinstance(sample, list) else [sample]
        first = next((row for row in rows if isinstance(row, dict)), None)
        keys = set(first or {})
    for kind, required in ROW_KIND_RULES:
        if required <= keys:
            return kind
    return None


def _kind_or_usage_error(path: Path, kind: str | None) -> str:
    if kind is None:
        raise UsageError(
            f"{path}: cannot tell what kind of file this is; pass --kind (one of {', '.join(KINDS)})"
        )
    return kind


# --- manifests ---------------------------------------------------------------------------------


def load_manifest(path: Path, report: FileReport) -> Manifest | None:
    """Parse and validate a manifest; its problems are reported against the manifest file."""
    try:
        data = parse_json(read_text(path))
    except SourceError as error:
        report.add(error.line, "-", error.message, file=path)
        return None
    if not isinstance(data, dict):
        report.add(None, "-", f"a manifest is a JSON object, got {_type_name(data)}", file=path)
        return None
    manifest = check_model(Manifest, data, report, lambda loc: None, file=path)
    return manifest if isinstance(manifest, Manifest) else None


def check_manifest_matches(
    manifest: Manifest, report: FileReport, kind: str, rows: int, content_sha256: Callable[[], str]
) -> None:
    """The manifest must describe this file: kind, name, row count and content hash."""
    mpath = manifest_path_for(report.path)
    if manifest.kind != kind:
        report.add(None, "kind", f"manifest says kind {manifest.kind!r}, file validated as {kind!r}", mpath)
    if manifest.data_file != report.path.name:
        report.add(
            None, "data_file", f"manifest names {manifest.data_file!r}, not {report.path.name!r}", mpath
        )
    if manifest.rows != rows:
        report.add(None, "rows", f"manifest says {manifest.rows} rows, file has {rows}", mpath)
    elif report.valid:
        actual = content_sha256()
        if actual != manifest.content_sha256:
            report.add(
                None,
                "content_sha256",
                f"content hash {actual} differs from the manifest's {manifest.content_sha256} "
                "(the data changed after the manifest was written)",
                mpath,
            )


# --- per-format validation ---------------------------------------------------------------------


class _UniqueTracker:
    """Reports repeated values of a kind's unique field (e.g. record ids) across rows."""

    def __init__(self, field_name: str | None, report: FileReport | _SharedProblems) -> None:
        self.field_name = field_name
        self.report = report
        self.first_seen: dict[Any, str] = {}

    def see(self, row: Any, where: str | int | None) -> None:
        if self.field_name is None or not isinstance(row, dict):
            return
        value = row.get(self.field_name)
        if not isinstance(value, str):
            return
        if value in self.first_seen:
            self.report.add(
                where,
                self.field_name,
                f"duplicate {self.field_name} {value!r} (first at {self.first_seen[value]})",
            )
        else:
            self.first_seen[value] = f"line {where}" if isinstance(where, int) else str(where)


def _validate_document(kind: Kind, data: Any, report: FileReport, locate: Callable) -> None:
    if not isinstance(data, dict):
        report.add(locate(()), "-", f"a {kind.name} is a mapping at the top level, got {_type_name(data)}")
        return
    if check_model(kind.model, data, report, locate) is None and kind.raw_checks is not None:
        for loc, message in kind.raw_checks(data):
            report.add(locate(loc), field_path(loc), message)


def _type_name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", type(None): "nothing"}.get(
        type(value), type(value).__name__
    )


def _validate_row_list(
    kind: Kind,
    charforge: bool,
    rows: Any,
    report: FileReport,
    where_of: Callable[[tuple[str | int, ...]], str | int | None],
) -> list[dict[str, Any]]:
    """Validate a YAML/JSON list of rows; return the raw rows (for the manifest's content hash)."""
    if not isinstance(rows, list):
        report.add(
            where_of(()),
            "-",
            f"{kind.name} files hold a list of rows at the top level, got {_type_name(rows)}",
        )
        return []
    formats = _RowFormats(kind, report)
    for index, row in enumerate(rows):
        if formats.decide(_row_format(kind, row), where_of((index,))):
            break
    if formats.refused:
        report.rows = len(rows)
        return rows
    model = kind.row_model(charforge, formats.chosen)
    # A problem inside a YAML anchor is the same problem, at the anchor's line, in every entry that
    # uses it: listed once (where it first shows), with a count and the entries that share it.
    shared = _SharedProblems()
    unique = _UniqueTracker(kind.unique_field, shared)
    for index, row in enumerate(rows):
        shared.entry = _row_name(row, kind.unique_field, index)
        mixed = formats.other(_row_format(kind, row))
        if mixed is not None:
            shared.add(where_of((index,)), "-", mixed)
        else:
            for loc, message in model_errors(model, row):
                shared.add(where_of((index, *loc)), field_path(loc), message)
        unique.see(row, where_of((index,)))
    shared.report_to(report)
    report.rows = len(rows)
    return rows


class _SharedProblems:
    """Problems in file order, each once, with the entries it was found in."""

    def __init__(self) -> None:
        self.entry = ""
        self.found: dict[tuple[str | int | None, str, str], list[str]] = {}

    def add(self, where: str | int | None, path: str, message: str) -> None:
        self.found.setdefault((where, path, message), []).append(self.entry)

    def report_to(self, report: FileReport) -> None:
        for (where, path, message), entries in self.found.items():
            if len(entries) > 1:
                names = ", ".join(entries[:SHARED_NAMES_SHOWN]) + (
                    ", …" if len(entries) > SHARED_NAMES_SHOWN else ""
                )
                message = f"{message} (shared by {len(entries)} entries: {names})"
            report.add(where, path, message)


SHARED_NAMES_SHOWN = 6


# --- TRL row formats ---------------------------------------------------------------------------


def _row_format(kind: Kind, row: Any) -> RowFormat | None:
    if not kind.formats or not isinstance(row, dict):
        return None
    return kind.row_format({key: value_shape(value) for key, value in row.items()})


class _RowFormats:
    """The TRL format of a file's rows: that of its first row whose format can be told (TRL, too, reads
    a dataset's format from its first row). A format the kind does not take is one error for the file;
    a row in another format than the file's is one error for the row."""

    def __init__(self, kind: Kind, report: FileReport) -> None:
        self.kind = kind
        self.report = report
        self.chosen: RowFormat | None = None
        self.where: str = ""
        self.refused = False

    def decide(self, found: RowFormat | None, where: str | int | None) -> bool:
        """Take ``found`` (the format of the row at ``where``) as the file's; False: not told yet."""
        if found is None:
            return False
        self.chosen = found
        self.where = f"line {where}" if isinstance(where, int) else str(where or "its first row")
        self.report.row_format = found.name
        if found.model is None:
            self.refused = True
            self.report.add(where, "-", f"rows in TRL's {found.name} format: {found.refusal}")
        elif found.untrained:
            self.report.notes.append(f"{found.name}: {found.untrained}")
        return True

    def other(self, found: RowFormat | None) -> str | None:
        """Why a row of format ``found`` does not belong in this file; None when it does."""
        if found is None or self.chosen is None or found.name == self.chosen.name:
            return None
        return (
            f"a row in TRL's {found.name} format in a file of {self.chosen.name} rows (as at {self.where}): "
            "one file holds one format, as TRL reads a dataset's format from its first row"
        )


def _arrow_shape(dtype: Any) -> str | None:
    """``value_shape`` of a parquet column's type: strings are text, lists of structs messages."""
    import pyarrow as pa

    if pa.types.is_dictionary(dtype):  # a categorical string column
        dtype = dtype.value_type
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype):
        return TEXT
    if (
        pa.types.is_list(dtype) or pa.types.is_large_list(dtype) or pa.types.is_list_view(dtype)
    ) and pa.types.is_struct(dtype.value_type):
        return MESSAGES
    return None


def _row_name(row: Any, unique_field: str | None, index: int) -> str:
    """The entry's id where it has a usable one, else ``entry N`` (1-based)."""
    value = row.get(unique_field) if unique_field and isinstance(row, dict) else None
    return value if isinstance(value, str) and value else f"entry {index + 1}"


def _validate_text(
    path: Path, fmt: str, kind_name: str | None, report: FileReport, manifest: Manifest | None
) -> None:
    if fmt == "jsonl":  # streamed line by line: memory stays bounded by the longest line
        _validate_jsonl(path, kind_name, report, manifest)
        return
    try:
        text = read_text(path)
    except SourceError as error:
        report.add(error.line, "-", error.message)
        return
    if not text.strip():
        report.add(None, "-", "file is empty")
        return

    document: YamlDocument | None = None
    try:
        if fmt == "yaml":
            document, duplicates = load_yaml(text)
            data = document.data
            for line, message in duplicates:
                report.add(line, "-", message + " (YAML would silently keep only the last)")
        else:
            data = parse_json(text)
            if len(text) <= JSON_LINE_LOOKUP_LIMIT:
                document = _json_line_index(text)
    except SourceError as error:
        report.add(error.line, "-", error.message)
        return
    if data is None:
        report.add(None, "-", "file holds no data")
        return
    if data == []:
        report.add(None, "-", NO_ROWS)
        return

    name = _kind_or_usage_error(path, kind_name or infer_kind(path, data))
    kind = KINDS[name]
    report.kind = name

    def where_of(loc: tuple[str | int, ...]) -> str | int | None:
        line = document.line_of(loc) if document is not None else None
        if line is not None:
            return line
        if kind.shape == "rows" and loc and isinstance(loc[0], int):
            return f"row {loc[0]}"
        return None

    if kind.shape == "document":
        _validate_document(kind, data, report, where_of)
        return
    charforge = manifest is not None
    report.charforge = charforge
    rows = _validate_row_list(kind, charforge, data, report, where_of)
    if manifest is not None:
        from charforge.corpus import content_sha256

        check_manifest_matches(manifest, report, name, len(rows), lambda: content_sha256(rows))


def _json_line_index(text: str) -> YamlDocument | None:
    """JSON is (almost) YAML: the YAML composer gives us node lines. Best effort only."""
    try:
        document, _ = load_yaml(text)
    except SourceError:
        return None
    return document


def _validate_jsonl(path: Path, kind_name: str | None, report: FileReport, manifest: Manifest | None) -> None:
    """Streamed line by line, nothing kept but what the manifest's hash needs: the kind, when not
    named, comes from a first pass that stops at the first object (the first line, in any real file)."""
    name = kind_name
    if name is None:
        entries = 0
        for _, value in iter_jsonl_file(path):
            entries += 1
            if isinstance(value, dict):
                name = infer_kind(path, value)
                break
        if entries == 0:
            report.add(None, "-", "file is empty")
            return
        if name is None:
            # nothing parseable to infer from: report the parse errors there are, or ask for --kind
            for line, value in iter_jsonl_file(path):
                if isinstance(value, SourceError):
                    report.add(line, "-", value.message)
            if not report.valid:
                return
    kind = KINDS[_kind_or_usage_error(path, name)]
    report.kind = kind.name
    if kind.shape == "document":
        report.add(None, "-", f"a {kind.name} is a single document; JSONL holds rows (use YAML or JSON)")
        return
    charforge = manifest is not None
    report.charforge = charforge
    formats = _RowFormats(kind, report)
    if kind.formats:  # a first pass up to the first row whose format can be told
        for line, value in iter_jsonl_file(path):
            if not isinstance(value, SourceError) and formats.decide(_row_format(kind, value), line):
                break
    if formats.refused:
        return
    model = kind.row_model(charforge, formats.chosen)
    unique = _UniqueTracker(kind.unique_field, report)
    rows: list[dict[str, Any]] = []  # for the manifest's content hash: only while the file is valid
    count = 0
    for line, value in iter_jsonl_file(path):
        count += 1
        if isinstance(value, SourceError):
            report.add(line, "-", value.message)
        elif (mixed := formats.other(_row_format(kind, value))) is not None:
            report.add(line, "-", mixed)
            unique.see(value, line)
        else:
            check_model(model, value, report, lambda loc, line=line: line)
            unique.see(value, line)
        if manifest is not None and report.valid:
            rows.append(value)
        elif rows:
            rows.clear()
    if count == 0:
        report.add(None, "-", "file is empty")
        return
    report.rows = count
    if manifest is not None:
        from charforge.corpus import content_sha256

        check_manifest_matches(manifest, report, kind.name, count, lambda: content_sha256(rows))


def _validate_parquet(
    path: Path, kind_name: str | None, report: FileReport, manifest: Manifest | None
) -> None:
    from charforge.fastcheck import parquet_columns, validate_parquet_rows

    try:
        columns = parquet_columns(path)
    except SourceError as error:
        report.add(error.line, "-", error.message)
        return
    kind = KINDS[_kind_or_usage_error(path, kind_name or infer_kind(path, None, columns))]
    report.kind = kind.name
    if kind.shape == "document":
        report.add(None, "-", f"a {kind.name} is a single document, not a parquet table (use YAML or JSON)")
        return
    report.charforge = manifest is not None
    formats = _RowFormats(kind, report)
    if kind.formats:  # a column has one type: the schema tells every row's format
        formats.decide(kind.row_format(_parquet_shapes(path)), None)
        if formats.refused:
            return
    validate_parquet_rows(path, kind, kind.row_model(report.charforge, formats.chosen), report)
    if report.rows == 0:
        report.add(None, "-", NO_ROWS)
        return
    if manifest is not None and report.rows is not None:
        from charforge.corpus import parquet_content_sha256

        check_manifest_matches(manifest, report, kind.name, report.rows, lambda: parquet_content_sha256(path))


def _parquet_shapes(path: Path) -> dict[str, str | None]:
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)  # readable: parquet_columns read it a moment ago
    return {name: _arrow_shape(schema.field(name).type) for name in schema.names}


# --- entry points ------------------------------------------------------------------------------


def validate_file(path: Path, kind: str | None = None, max_listed: int = DEFAULT_MAX_LISTED) -> FileReport:
    """Validate one file. Raises UsageError only for misuse; any content problem is in the report."""
    if kind is not None and kind not in KINDS:
        raise UsageError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    report = FileReport(path, max_listed=max_listed)
    fmt = detect_format(path, text_as_json=kind is not None)  # opens regular files only
    if fmt is None:
        raise UsageError(unknown_format(path))
    report.fmt = fmt
    try:
        require_regular_file(path)  # a FIFO or a device is refused before anything opens it
    except SourceError as error:
        report.add(None, "-", error.message)
        return report
    try:
        manifest: Manifest | None = None
        mpath = manifest_path_for(path)
        is_manifest = path.name.endswith(MANIFEST_SUFFIX) or kind == "manifest"
        if not is_manifest and mpath.is_file():
            manifest = load_manifest(mpath, report)
            if manifest is None:
                return report
            kind = kind or manifest.kind
            if kind not in KINDS:
                report.add(None, "kind", f"manifest names unknown kind {kind!r}", mpath)
                return report
        if fmt == "parquet":
            _validate_parquet(path, kind, report, manifest)
        else:
            _validate_text(path, fmt, kind, report, manifest)
    except UsageError:
        raise
    except Exception as error:  # last line of defence: a report, never a traceback
        report.add(None, "-", f"could not validate ({type(error).__name__}: {error})")
    except BaseException as error:
        if not is_rust_panic(error):
            raise
        report.add(None, "-", f"could not validate (a panic in polars or pyarrow: {error})")
    return report


def is_rust_panic(error: BaseException) -> bool:
    """pyo3's PanicException (a Rust panic in polars or pyarrow) derives from BaseException, so that
    ``except Exception`` lets it through; it is told by name, so that polars need not be imported."""
    return type(error).__name__ == "PanicException"


def expand_paths(
    paths: Iterable[Path], *, text_as_json: bool = False, skipped: list[tuple[Path, str]] | None = None
) -> Iterator[Path]:
    """Files as given; folders expanded to the known-format files below them (hidden ones skipped
    silently). ``text_as_json``: `.txt` files holding JSON count as known (a kind was named). Other files
    of a folder are left out, each added to ``skipped`` with the reason when a list is given."""
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                hidden = any(part.startswith(".") for part in child.relative_to(path).parts)
                if child.is_dir() or hidden:
                    continue
                if not child.is_file():  # a FIFO, a device, a broken link: never opened
                    if skipped is not None:
                        skipped.append((child, "not a regular file"))
                    continue
                if detect_format(child, text_as_json) is not None:
                    yield child
                elif skipped is not None:
                    suffix = child.suffix.lower() or "no suffix"
                    reason = f"not a corpus format ({suffix})"
                    if child.suffix.lower() in JSON_TEXT_SUFFIXES and not text_as_json:
                        reason += "; a .txt file holding JSON is read when --kind names its kind"
                    skipped.append((child, reason))
        else:
            yield path
