"""A stage error is one line that says where it came from; `--debug` shows the traceback instead."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from packaging.version import Version
from support.factories import run_cli

from charforge.cli_run import error_line, origin
from charforge.params import SourceFileError, load_source
from charforge.schemas import Constitution

REPO = Path(__file__).resolve().parents[1]


def raised(action: object) -> BaseException:
    with pytest.raises(Exception) as caught:
        action()  # type: ignore[operator]
    return caught.value


def test_an_error_a_library_raised_names_the_library_and_the_call() -> None:
    error = raised(lambda: Version("not a version"))  # a ValueError raised inside a library
    where = origin(error)
    assert where is not None and where.startswith("packaging (packaging.version.__init__ at version.py:")
    line = error_line(error)
    assert line.startswith("error from packaging (") and "InvalidVersion" in line and "--debug" in line


def test_an_error_charforge_raised_is_its_message_alone(tmp_path: Path) -> None:
    error = raised(lambda: load_source(Constitution, tmp_path / "missing.yaml"))
    assert origin(error) is None
    assert error_line(error).startswith(f"error: {tmp_path / 'missing.yaml'}:-: -: cannot read file")


def test_an_invalid_source_is_located_by_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "humor.yaml"
    shutil.copy(REPO / "corpora/constitutions/humor.yaml", path)
    text = path.read_text().replace("kind: normative", "kind: normativ")
    path.write_text(text)
    with pytest.raises(SourceFileError) as caught:
        load_source(Constitution, path)
    line = 1 + text[: text.index("kind: normativ")].count("\n")
    assert [str(p).split(": ")[0:2] for p in caught.value.problems] == [[f"{path}:{line}", "kind"]]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


def test_a_stage_with_a_missing_source_exits_1_with_one_line_and_no_traceback(project: Path) -> None:
    result = run_cli("run", "prompts", "--variant", "nosuch-d0-s0", cwd=project)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "error: corpora/constitutions/nosuch.yaml:-: -: cannot read file: No such file or directory"
    )


@pytest.mark.parametrize("how", ["--debug", "env"])
def test_debug_shows_the_full_traceback(project: Path, how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["run", "prompts", "--variant", "nosuch-d0-s0"]
    if how == "env":
        monkeypatch.setenv("CHARFORGE_DEBUG", "1")
    else:
        args.insert(0, "--debug")
    result = run_cli(*args, cwd=project)
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "charforge/stages/prompts.py" in result.stderr and "SourceFileError" in result.stderr
    json.dumps(result.stderr)  # printable as it is


def test_a_plain_error_charforge_raised_points_at_the_traceback_too() -> None:
    line = error_line(ValueError("the adapters cannot be folded"))
    assert line.startswith("error: the adapters cannot be folded (rerun with `charforge --debug run")
