"""Reading ``params.yaml``: each stage takes the sections it needs, typed, with located errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from charforge.io import SourceError, load_yaml, read_text
from charforge.validate import FileReport, Problem, check_model

DEFAULT_PARAMS = Path("params.yaml")
Section = TypeVar("Section", bound=BaseModel)


class ParamsError(Exception):
    """params.yaml is missing, unparsable or has an invalid section; ``problems`` say where."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(map(str, problems)))
        self.problems = problems


def load_section(model: type[Section], key: str, path: Path = DEFAULT_PARAMS) -> Section:
    """The ``key`` section of ``path`` as ``model``; ParamsError with FILE:LINE: key.field problems."""
    report = FileReport(path, max_listed=100)
    try:
        document, duplicates = load_yaml(read_text(path))
    except SourceError as error:
        raise ParamsError([Problem(str(path), str(error.line or "-"), "-", error.message)]) from None
    for line, message in duplicates:
        report.add(line, "-", message + " (YAML would silently keep only the last)")
    data: Any = document.data
    if not isinstance(data, dict) or key not in data:
        report.add(None, key, "section is missing")
        raise ParamsError(report.problems)
    before = len(report.problems)
    section = check_model(model, data[key], report, lambda loc: document.line_of((key, *loc)))
    report.problems[before:] = [
        Problem(p.file, p.where, f"{key}.{p.field}" if p.field != "-" else key, p.message)
        for p in report.problems[before:]
    ]
    if not report.valid or section is None:
        raise ParamsError(report.problems)
    return section  # type: ignore[return-value]


def params_error(path: Path, loc: tuple[str | int, ...], message: str) -> ParamsError:
    """A ParamsError for one setting, located at its line of ``path`` when the file says where."""
    line: int | None = None
    try:
        document, _ = load_yaml(read_text(path))
        line = document.line_of(loc)
    except SourceError:
        pass
    field = ".".join(str(part) for part in loc)
    return ParamsError([Problem(str(path), str(line or "-"), field, message)])
