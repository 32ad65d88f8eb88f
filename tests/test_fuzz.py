"""`validate` never raises on arbitrary bytes, whatever the format or kind (DESIGN: no traceback), and
`inspect` never crashes on them: exit 0, 1 or 2, never a traceback (issue 21)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from charforge.cli import app
from charforge.schemas import KINDS
from charforge.validate import UsageError, validate_file

SUFFIXES = [".yaml", ".json", ".jsonl", ".parquet"]
# Bytes that look like the start of real files, so the fuzzer gets past the first parser check.
PREFIXES = [
    b"",
    b"PAR1",
    b"name: x\ntraits:\n  - ",
    b'[{"prompt": [',
    b'{"chosen": ',
    b"- id: &a x\n  paraphrases: *a\n",
]


def assert_inspect_never_crashes(path: Path, kind: str | None = None) -> None:
    """`charforge inspect PATH [--kind KIND]` in this process: a summary, a one-line error or a usage
    error; an exception escaping the command (a traceback to the user) fails."""
    result = CliRunner().invoke(app, ["inspect", str(path), *(["--kind", kind] if kind else [])])
    assert result.exit_code in (0, 1, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    if result.exit_code == 1 and not result.stdout:
        (line,) = result.stderr.splitlines()  # one located line: FILE:WHERE: field: message
        assert line.startswith(f"{path}:")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.sampled_from(PREFIXES),
    st.binary(max_size=512),
    st.sampled_from(SUFFIXES),
    st.sampled_from([None, *KINDS]),
)
def test_validate_never_raises(
    tmp_path_factory: pytest.TempPathFactory, prefix: bytes, body: bytes, suffix: str, kind: str | None
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / f"input{suffix}"
    path.write_bytes(prefix + body)
    assert_inspect_never_crashes(path, kind)
    try:
        report = validate_file(path, kind)
    except UsageError:
        assert kind is None  # only "cannot tell the kind" is a usage error here
        return
    for problem in report.problems:
        assert str(problem).startswith(f"{path}:") or str(problem).startswith(str(path.with_suffix("")))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
        ),
        max_leaves=30,
    )
)
def test_validate_never_raises_on_arbitrary_json_values(
    tmp_path_factory: pytest.TempPathFactory, value: object
) -> None:
    import json

    folder = tmp_path_factory.mktemp("values")
    for kind in KINDS:
        path = folder / f"{kind}.json"
        path.write_text(json.dumps(value))
        validate_file(path, kind)
        path = folder / f"{kind}.jsonl"
        path.write_text(json.dumps(value) + "\n")
        validate_file(path, kind)
    for suffix, text in ((".json", json.dumps(value)), (".jsonl", json.dumps(value) + "\n")):
        path = folder / f"value{suffix}"
        path.write_text(text)
        assert_inspect_never_crashes(path)
        rows = folder / f"rows{suffix}"  # the value as a field of two rows, to be put in one table
        rows.write_text(json.dumps([{"a": value}, {"a": value, "b": value}]))
        if suffix == ".jsonl":
            rows.write_text(f"{json.dumps({'a': value})}\n{json.dumps({'a': 1, 'b': value})}\n")
        assert_inspect_never_crashes(rows)


def test_fuzz_files_keep_the_report_format(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_bytes(b"\x00")
    report = validate_file(path, "constitution")
    assert not report.valid and str(report.problems[0]).startswith(f"{path}:")
