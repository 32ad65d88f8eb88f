"""Reading ``params.yaml``: each stage takes the keys it declares, typed, with located errors.

Every stage module declares the params keys it reads once, as ``PARAMS`` (dotted, as dvc.yaml names
them: ``models.teacher``, ``generation.batch_size``, ``distill``). dvc.yaml's ``params`` of the stage
equal that declaration (a test checks it), ``load_section`` reads one key of it, and ``recorded`` gives
the block a manifest or adapter records as the params used: the same keys, validated, defaults filled.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from charforge.io import SourceError, load_yaml, read_text
from charforge.paths import PARAMS
from charforge.validate import FileReport, Problem, check_model

DEFAULT_PARAMS = PARAMS
Section = TypeVar("Section", bound=BaseModel)


class ParamsError(Exception):
    """params.yaml is missing, unparsable or has an invalid section; ``problems`` say where."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(map(str, problems)))
        self.problems = problems


def load_section(model: type[Section], key: str, path: Path = DEFAULT_PARAMS) -> Section:
    """The ``key`` section of ``path`` as ``model``; ParamsError with FILE:LINE: key.field problems.

    ``key`` may be dotted (``models.teacher``): only that part of the file is read and validated."""
    return _checked(model, path, tuple(key.split(".")), ParamsError)


class SourceFileError(ValueError):
    """A source file a stage reads (a constitution, the situations, the introspection prompts) is
    missing, unparsable or invalid; ``problems`` say where, as FILE:LINE: field: message."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(map(str, problems)))
        self.problems = problems


def load_source(model: type[Section], path: Path) -> Section:
    """The YAML file ``path`` as ``model``, or a SourceFileError with every problem located: what
    `charforge validate` would say of it."""
    return _checked(model, path, (), SourceFileError)


def _checked(
    model: type[Section], path: Path, parts: tuple[str, ...], error: type[ParamsError | SourceFileError]
) -> Section:
    """The part ``parts`` of the YAML file ``path`` (the whole file when empty) as ``model``; ``error``
    with every problem located at FILE:LINE, fields named from the top of the file."""
    report = FileReport(path, max_listed=100)
    try:
        document, duplicates = load_yaml(read_text(path))
    except SourceError as problem:
        raise error([Problem(str(path), str(problem.line or "-"), "-", problem.message)]) from None
    for line, message in duplicates:
        report.add(line, "-", message + " (YAML would silently keep only the last)")
    data: Any = document.data
    for depth, part in enumerate(parts):
        if not isinstance(data, dict) or part not in data:
            report.add(None, ".".join(parts[: depth + 1]), "section is missing")
            raise error(report.problems)
        data = data[part]
    before = len(report.problems)
    value = check_model(model, data, report, lambda loc: document.line_of((*parts, *loc)))
    if parts:
        key = ".".join(parts)
        report.problems[before:] = [
            Problem(p.file, p.where, f"{key}.{p.field}" if p.field != "-" else key, p.message)
            for p in report.problems[before:]
        ]
    if not report.valid or value is None:
        raise error(report.problems)
    return value  # type: ignore[return-value]


def _section_models() -> dict[str, type[BaseModel]]:
    from charforge.schemas import params as schema

    return {
        "models": schema.ModelsConfig,
        "generation": schema.GenerationConfig,
        "prompts": schema.PromptsConfig,
        "held_out": schema.HeldOutConfig,
        "distill": schema.DistillConfig,
        "introspection": schema.IntrospectionConfig,
        "controls": schema.ControlsConfig,
        "em_data": schema.EmDataConfig,
        "persona": schema.PersonaConfig,
        "train_dpo": schema.TrainStageConfig,
        "train_sft": schema.TrainStageConfig,
        "em_finetune": schema.EmFinetuneConfig,
        "defences": schema.DefencesConfig,
        "eval": schema.EvalConfig,
    }


def recorded(keys: Sequence[str], path: Path = DEFAULT_PARAMS) -> dict[str, Any]:
    """The params a stage records as used: each declared key with its value, validated by its section's
    model where the key is or lies inside a model (defaults filled in), as JSON-ready data."""
    from pydantic import TypeAdapter, ValidationError

    models = _section_models()
    used: dict[str, Any] = {}
    for key in keys:
        first, *rest = key.split(".")
        model: Any = models.get(first)
        field = None
        for part in rest:  # descend through nested models; a leaf keeps its field's type
            field = model.model_fields.get(part) if isinstance(model, type) else None
            model = None if field is None else field.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            used[key] = load_section(model, key, path).model_dump(mode="json")
            continue
        try:
            value = _raw(key, path)
        except ParamsError:
            if field is None or field.is_required():
                raise
            value = field.get_default(call_default_factory=True)  # left out: the stage uses the default
        if model is not None:
            adapter = TypeAdapter(model)
            # e.g. models.judges, a list of roles: recorded with their defaults, as the stage uses them; a
            # bad value is left to the section's own loading, which reports it at its line in params.yaml
            with contextlib.suppress(ValidationError):
                value = adapter.validate_python(value)
            value = adapter.dump_python(value, mode="json")
        used[key] = value
    return used


def _raw(key: str, path: Path) -> Any:
    document, _ = load_yaml(read_text(path))
    data: Any = document.data
    for depth, part in enumerate(key.split(".")):
        if not isinstance(data, dict) or part not in data:
            raise ParamsError([Problem(str(path), "-", ".".join(key.split(".")[: depth + 1]), "is missing")])
        data = data[part]
    return data


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
