"""Reading the file formats charforge accepts, with source positions, and atomic writes.

Formats: YAML (safe loader only), JSON, JSONL, parquet. Readers raise ``SourceError`` with a line
number where the parser gives one; they never let a parser's own exception escape.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

try:  # the C parser is ~10x faster; both are safe loaders
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]


class SafeLoader(_BaseLoader):  # type: ignore[misc, valid-type]
    """PyYAML's safe loader, reading exponent floats as YAML 1.2 does: ``1e-05``, ``1e5``, ``1.0e5``.

    YAML 1.1 (PyYAML) reads those as strings, but DVC writes ``params.yaml`` with YAML 1.2 rules: after
    ``dvc exp run -S train_dpo.trainer.learning_rate=1e-5`` the file says ``1e-05``, and a 1.1 reader
    would hand the trainer the string "1e-05"."""


SafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"),
)


def _construct_int(loader: yaml.constructor.SafeConstructor, node: yaml.ScalarNode) -> int:
    """PyYAML's int, with Python's digit limit turned into an error at the integer's line."""
    try:
        return yaml.constructor.SafeConstructor.construct_yaml_int(loader, node)  # type: ignore[no-any-return]
    except ValueError:
        raise yaml.constructor.ConstructorError(
            None, None, f"integer with more than {_max_int_digits()} digits", node.start_mark
        ) from None


def _max_int_digits() -> int:
    return sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 4300


SafeLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)

FORMAT_BY_SUFFIX = {
    ".yaml": "yaml",
    ".yml": "yaml",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
}
PARQUET_MAGIC = b"PAR1"
# Expanded size past which a YAML document is refused: aliases can make a small file expand
# exponentially ("billion laughs"), and validation walks the expanded tree.
MAX_YAML_EXPANDED_NODES = 2_000_000


class SourceError(Exception):
    """A file could not be parsed. ``line`` is 1-based when the parser knows it; ``field`` names the
    key or column at fault, when there is one."""

    def __init__(self, message: str, line: int | None = None, field: str = "-") -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.field = field


# Suffixes that say nothing of the format: read as JSON only when the caller names a kind (the Open
# Character Training repository keeps its hand-written constitutions as JSON in `.txt` files)
JSON_TEXT_SUFFIXES = frozenset({".txt"})
SNIFF_BYTES = 65536
# A JSONL row is one line: a longer line is reported and skipped, so memory stays bounded even for a
# file with no newline at all.
MAX_JSONL_LINE_BYTES = 16 * 1024 * 1024
SKIP_BLOCK_BYTES = 1024 * 1024


def printable(text: str) -> str:
    """``text`` with control, format and surrogate characters escaped (``\\n``, ``\\x1b``, ``\\u2028``):
    a key or value from a file can neither forge a second report line nor reach the terminal raw."""
    return "".join(char.encode("unicode_escape").decode("ascii") if _unsafe(char) else char for char in text)


def _unsafe(char: str) -> bool:
    category = unicodedata.category(char)
    return category.startswith("C") or category in ("Zl", "Zp")


def require_regular_file(path: Path) -> None:
    """Refuse anything but a regular file, by ``stat`` and before any read: a FIFO would block the
    reader forever and a character device such as ``/dev/zero`` never ends (links are followed)."""
    try:
        mode = path.stat().st_mode
    except OSError as error:
        raise SourceError(f"cannot read file: {error.strerror or error}") from None
    if not stat.S_ISREG(mode):
        raise SourceError(f"not a regular file ({_file_type(mode)}): refused without reading it")


def _file_type(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "a special file"


def unknown_format(path: Path) -> str:
    """What `validate` and `inspect` say of a file whose format ``detect_format`` cannot tell."""
    return (
        f"{path}: unknown file format; use .yaml, .yml, .json, .jsonl or .parquet (a .txt file holding JSON "
        "is read when --kind names its kind)"
    )


def detect_format(path: Path, text_as_json: bool = False) -> str | None:
    """The format named by the file's suffix, else sniffed from its first bytes; None if unknown.

    With ``text_as_json``, a ``.txt`` file whose text starts like JSON is JSON (an array, or one object
    over several lines) or JSONL (its first line a whole JSON object)."""
    fmt = FORMAT_BY_SUFFIX.get(path.suffix.lower())
    if fmt:
        return fmt
    if not path.is_file():  # never open a FIFO or a device to sniff it
        return None
    sniff_json = text_as_json and path.suffix.lower() in JSON_TEXT_SUFFIXES
    try:
        with path.open("rb") as handle:
            head = handle.read(SNIFF_BYTES if sniff_json else len(PARQUET_MAGIC))  # no more than needed
    except OSError:
        return None
    if head[:4] == PARQUET_MAGIC:
        return "parquet"
    if sniff_json:
        text = head.decode("utf-8-sig", errors="replace").lstrip()
        if text.startswith("["):
            return "json"
        if text.startswith("{"):
            try:
                json.loads(text.split("\n", 1)[0])
            except ValueError:
                return "json"
            return "jsonl"
    return None


def read_text(path: Path) -> str:
    """UTF-8 text (a BOM is tolerated); a clear SourceError for binary or unreadable files."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise SourceError(f"cannot read file: {error.strerror or error}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise SourceError(
            f"not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start})", line
        ) from None


@dataclass
class YamlDocument:
    """A parsed YAML document and its node tree, to find the source line of any element."""

    data: Any
    root: yaml.Node | None

    def line_of(self, path: tuple[str | int, ...]) -> int | None:
        """1-based line of the deepest node along ``path`` (a pydantic error location)."""
        node = self.root
        if node is None:
            return None
        line = node.start_mark.line + 1
        for part in path:
            child = _child(node, part)
            if child is None:
                break
            node = child
            line = node.start_mark.line + 1
        return line


def _child(node: yaml.Node, part: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                return value
        return None
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        return node.value[part]
    return None


def _check_expansion(root: yaml.Node) -> list[tuple[int, str]]:
    """Refuse recursive or explosive aliases; return duplicate mapping keys as (line, message)."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    duplicates: list[tuple[int, str]] = []

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in on_path:
            raise SourceError("recursive alias (a node that contains itself)", node.start_mark.line + 1)
        on_path.add(key)
        total = 1
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    if key_node.value in seen:
                        duplicates.append((key_node.start_mark.line + 1, f"duplicate key {key_node.value!r}"))
                    seen.add(key_node.value)
                total += size(key_node) + size(value_node)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                total += size(item)
        on_path.discard(key)
        sizes[key] = total
        if total > MAX_YAML_EXPANDED_NODES:
            raise SourceError(
                f"document expands to more than {MAX_YAML_EXPANDED_NODES:,} nodes through aliases",
                node.start_mark.line + 1,
            )
        return total

    size(root)
    return duplicates


def read_yaml(path: Path) -> Any:
    """The data of a YAML file, read with charforge's loader (YAML 1.2 floats, as DVC writes them)."""
    return load_yaml(read_text(path))[0].data


def load_yaml(text: str) -> tuple[YamlDocument, list[tuple[int, str]]]:
    """Parse one YAML document with the safe loader; return it and its duplicate keys."""
    loader = SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return YamlDocument(None, None), []
        duplicates = _check_expansion(root)
        data = loader.construct_document(root)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        message = " ".join(part for part in (error.context, error.problem) if part)
        raise SourceError(f"YAML: {message}", mark.line + 1 if mark else None) from None
    except yaml.YAMLError as error:
        raise SourceError(f"YAML: {error}") from None
    except RecursionError:
        raise SourceError("YAML: nesting too deep") from None
    finally:
        loader.dispose()
    return YamlDocument(data, root), duplicates


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key = key


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# A JSON string, a bracket, a colon or a run of digits: enough to find keys, numbers and strings.
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[{}\[\]:]|\d+')
# A high surrogate escape without a low one after it, or a low one without a high one before it (an
# escaped backslash before the ``u`` makes a false alarm, which the scan of the strings then clears).
_SURROGATE_ESCAPE = re.compile(
    r"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    r"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)
_SURROGATE = re.compile("[\ud800-\udfff]")


def _json_offset(
    text: str, *, duplicate: str | None = None, digits: int | None = None, surrogate: bool = False
) -> int | None:
    """Offset of the first repeated ``duplicate`` key in one object, integer longer than ``digits``
    or string holding a lone surrogate; only called once ``json`` has found one (its own errors
    carry no position)."""
    objects: list[set[str] | None] = []
    last_string: tuple[str, int] | None = None
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        if token == ":" and last_string is not None and objects and objects[-1] is not None:
            key = json.loads(last_string[0])
            if key == duplicate and key in objects[-1]:
                return last_string[1]
            objects[-1].add(key)
        elif token in "{[":
            objects.append(set() if token == "{" else None)
        elif token in "}]":
            if objects:
                objects.pop()
        elif token[0] == '"':
            if surrogate and _SURROGATE_ESCAPE.search(token) and _SURROGATE.search(json.loads(token)):
                return match.start()
            last_string = token, match.start()
            continue
        elif digits is not None and len(token) > digits:
            return match.start()
        last_string = None
    return None


def _line_at(text: str, offset: int | None, line_offset: int) -> int | None:
    if offset is None:
        return line_offset + 1 if line_offset else None
    return line_offset + text.count("\n", 0, offset) + 1


def parse_json(text: str, line_offset: int = 0) -> Any:
    """Strict JSON: no duplicate keys, no NaN/Infinity, no lone surrogate (``"\\ud800"``: not a
    character, and not writable as UTF-8). Errors carry the line."""
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        raise SourceError(f"JSON: {error.msg} (column {error.colno})", line_offset + error.lineno) from None
    except _DuplicateKey as error:
        line = _line_at(text, _json_offset(text, duplicate=error.key), line_offset)
        raise SourceError(f"JSON: {error}", line) from None
    except (ValueError, RecursionError) as error:
        message = "nesting too deep" if isinstance(error, RecursionError) else str(error)
        offset = None
        if "integer string conversion" in message:  # Python's digit limit (CVE-2020-10735)
            message = f"integer with more than {_max_int_digits()} digits"
            offset = _json_offset(text, digits=_max_int_digits())
        raise SourceError(f"JSON: {message}", _line_at(text, offset, line_offset)) from None
    if _SURROGATE_ESCAPE.search(text):
        offset = _json_offset(text, surrogate=True)
        if offset is not None:
            raise SourceError(
                "JSON: a string holds a lone surrogate escape (\\ud800-\\udfff without its pair): "
                "not a Unicode character",
                _line_at(text, offset, line_offset),
            )
    return value


def _jsonl_entries(lines: Iterator[tuple[int, str | SourceError]]) -> Iterator[tuple[int, Any | SourceError]]:
    """(line number, parsed value or SourceError) for every non-blank line."""
    for index, line in lines:
        if isinstance(line, SourceError) or not line.strip():
            if isinstance(line, SourceError):
                yield index, line
            continue
        try:
            yield index, parse_json(line, line_offset=index - 1)
        except SourceError as error:
            yield index, error


def iter_jsonl(text: str) -> Iterator[tuple[int, Any | SourceError]]:
    """(line number, parsed value or SourceError) for every non-blank line of ``text``. Lines end at
    ``\\n`` only: U+2028 and the like are legal inside a JSON string (``str.splitlines`` would cut there)."""
    return _jsonl_entries(iter(enumerate(text.split("\n"), start=1)))


def iter_jsonl_file(path: Path) -> Iterator[tuple[int, Any | SourceError]]:
    """Like ``iter_jsonl`` but streamed from disk: memory stays bounded by the longest line."""
    return _jsonl_entries(_decoded_lines(path))


def _decoded_lines(path: Path) -> Iterator[tuple[int, str | SourceError]]:
    try:
        require_regular_file(path)
        handle = path.open("rb")
    except SourceError as error:
        yield 1, error
        return
    except OSError as error:
        yield 1, SourceError(f"cannot read file: {error.strerror or error}")
        return
    with handle:
        index = 0
        while raw := handle.readline(MAX_JSONL_LINE_BYTES + 1):
            index += 1
            if len(raw) > MAX_JSONL_LINE_BYTES and not raw.endswith(b"\n"):
                while not raw.endswith(b"\n") and (raw := handle.readline(SKIP_BLOCK_BYTES)):
                    pass  # the rest of the line, read and dropped a block at a time
                yield (
                    index,
                    SourceError(
                        f"line longer than {MAX_JSONL_LINE_BYTES:,} bytes: not read (a JSONL row is one line)"
                    ),
                )
                continue
            if index == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            try:
                yield index, raw.decode("utf-8")
            except UnicodeDecodeError as error:
                byte = raw[error.start]
                yield index, SourceError(f"not UTF-8 text (byte 0x{byte:02x} at column {error.start + 1})")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    temp = Path(temp_name)
    try:
        yield temp
        # mkstemp creates the file 0600; give the result the permissions a plain open() would.
        os.chmod(temp, 0o666 & ~_current_umask())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; put it in place of ``path`` only if the block succeeds.

    A reader sees the old folder or the new one, never a half-written one (the swap is two renames;
    a crash between them leaves ``path`` missing, never partial).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    try:
        yield temp
        os.chmod(temp, 0o777 & ~_current_umask())
        if path.exists():
            os.replace(path, old)
        os.replace(temp, path)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as temp:
        temp.write_text(text, encoding="utf-8")


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def memoised_file_sha256(path: Path, index_file: Path | None) -> str:
    """``file_sha256`` of ``path``, remembered in ``index_file`` (a JSON map in the local cache) under the
    file's absolute path, size, inode, mtime and ctime, so an unchanged file is hashed once. Any
    rewrite, even one that keeps the size and restores the mtime, changes the ctime and is hashed again.
    The index is a local cache only: nothing DVC tracks may record its keys (they name this machine)."""
    if index_file is None:
        return file_sha256(path)
    stat = path.stat()
    key = f"{path.resolve()}:{stat.st_size}:{stat.st_ino}:{stat.st_mtime_ns}:{stat.st_ctime_ns}"
    try:
        index = json.loads(index_file.read_text()) if index_file.is_file() else {}
    except (OSError, ValueError):  # a damaged index is only a lost cache
        index = {}
    digest = index.get(key) if isinstance(index, dict) else None
    if isinstance(digest, str):
        return digest
    digest = file_sha256(path)
    index = index if isinstance(index, dict) else {}
    index[key] = digest
    with contextlib.suppress(OSError):  # read-only cache: hash again next time
        atomic_write_text(index_file, json.dumps(index, indent=1, sort_keys=True) + "\n")
    return digest


def project_relative(path: str | Path, root: Path) -> str:
    """``path`` as a record inside the project names it: relative to ``root`` (the project folder), in
    POSIX form, when it lies inside it (whether given relative to the working folder or absolute); a
    path outside the project (which no other checkout could share anyway) is kept as given."""
    candidate = Path(path)
    # abspath, not resolve(): a DVC output may be a symlink into the DVC cache, outside the project
    for inner, outer in (
        (os.path.abspath(candidate), os.path.abspath(root)),
        (candidate.resolve(), root.resolve()),
    ):
        with contextlib.suppress(ValueError):
            return Path(inner).relative_to(outer).as_posix()
    return candidate.as_posix()


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, UTF-8 kept as is."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
