"""``em_data.path``: a user's EM file must sit inside corpora/em, the em-generate stage's DVC dependency, or a
change to it would leave the EM corpus silently stale."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic_core import ErrorDetails

from charforge.params import ParamsError, load_section
from charforge.schemas.params import EmDataConfig
from charforge.stages.em_generate import source_path

ExpectError = Callable[..., ErrorDetails]


@pytest.mark.parametrize(
    "path",
    [
        "/home/me/mine.jsonl",  # absolute
        "/work/corpora/em/mine.jsonl",  # absolute, even when it ends in corpora/em
        "../mine.jsonl",  # outside the project
        "corpora/em/../../mine.jsonl",  # escapes corpora/em with ..
        "corpora/em/../build/mine.jsonl",  # another corpora folder, through ..
        "corpora/mine.jsonl",  # next to corpora/em, not inside
        "data/mine.jsonl",  # another folder
        "corpora/emx/mine.jsonl",  # a folder whose name only starts like it
        "corpora/em",  # the folder itself, not a file in it
        "corpora/em/..",
    ],
)
def test_a_path_outside_corpora_em_is_refused_with_the_reason(path: str, expect_error: ExpectError) -> None:
    error = expect_error(EmDataConfig, {"source": "jsonl", "path": path}, ("path",), "inside corpora/em/")
    assert "DVC tracks corpora/em" in error["msg"] and "put your file there" in error["msg"]


@pytest.mark.parametrize(
    "path",
    [
        "corpora/em/mine.jsonl",
        "./corpora/em/mine.jsonl",
        "corpora/em/user/mine.jsonl",
        "corpora/em/../em/x.jsonl",
    ],
)
def test_a_relative_path_inside_corpora_em_is_accepted(path: str, tmp_path: Path) -> None:
    config = EmDataConfig(source="jsonl", path=path)
    assert config.path == path
    resolved = source_path(config, tmp_path).resolve()
    assert resolved.is_relative_to((tmp_path / "corpora" / "em").resolve())


def test_the_params_error_names_the_file_line_and_field(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("em_data:\n  source: jsonl\n  path: /data/mine.jsonl\n")
    with pytest.raises(ParamsError) as caught:
        load_section(EmDataConfig, "em_data", params)
    (problem,) = caught.value.problems
    assert (problem.file, problem.where, problem.field) == (str(params), "3", "em_data.path")
    assert "must be a relative path to a file inside corpora/em/" in problem.message
