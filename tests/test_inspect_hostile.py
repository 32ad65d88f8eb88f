"""`charforge inspect` on hostile files (issue 21): a located one-line error or a summary, never a
traceback, never a hang, never a control character from the file on the terminal."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from support.factories import pair_row, run_cli, write_jsonl, write_parquet

SURROGATE = (
    "JSON: a string holds a lone surrogate escape (\\ud800-\\udfff without its pair): not a Unicode character"
)


def inspect(path: Path, *options: str, code: int) -> subprocess.CompletedProcess[str]:
    """`charforge inspect PATH`, which must exit with ``code`` and print no traceback."""
    result = run_cli("inspect", path, *options)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    return result


def error_line(path: Path, code: int = 1) -> str:
    """The one line `inspect` says of a file it refuses."""
    result = inspect(path, code=code)
    (line,) = result.stderr.splitlines()
    return line


def test_invalid_utf8_in_parquet_strings(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from charforge.corpus import rows_to_table

    rows = [pair_row(i) for i in range(3)]
    rows[1]["chosen"][0]["content"] = "MARKER"
    path = tmp_path / "pairs.parquet"
    pq.write_table(rows_to_table(rows), path, compression="none", use_dictionary=False)
    path.write_bytes(path.read_bytes().replace(b"MARKER", b"\xff\xfe\xfd\xfc\xfb\xfa"))
    assert error_line(path).startswith(f"{path}:-: -: not a readable parquet file (")


def test_a_lone_surrogate(tmp_path: Path) -> None:
    row = json.dumps(pair_row(0))
    path = tmp_path / "pairs.jsonl"
    path.write_text(row + "\n" + row.replace("A plain answer 0.", "\\udead") + "\n")
    assert error_line(path) == f"{path}:2: -: {SURROGATE}"


def test_a_fifo_and_a_link_to_an_endless_device_are_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "pairs.jsonl"
    os.mkfifo(fifo)
    assert error_line(fifo) == f"{fifo}:-: -: not a regular file (a FIFO): refused without reading it"
    zero = tmp_path / "zero.json"
    zero.symlink_to("/dev/zero")
    assert (
        error_line(zero)
        == f"{zero}:-: -: not a regular file (a character device): refused without reading it"
    )


def test_control_characters_from_the_file_never_reach_the_terminal(tmp_path: Path) -> None:
    row: dict[str, Any] = pair_row(0)
    row["evil\nfile.jsonl:1: -: all good\x1b[2J"] = 1
    row["trait_id"] = "wordplay\x1b]0;owned\x07\u2028"
    path = write_jsonl(tmp_path / "pairs.jsonl", [row])
    shown = inspect(path, code=0).stdout
    assert "\x1b" not in shown and "\x07" not in shown and "\u2028" not in shown
    assert "evil\\nfile.jsonl" in shown and "wordplay\\x1b]0;owned\\x07\\u2028" in shown
    summary = json.loads(inspect(path, "--json", code=0).stdout)
    assert summary["counts"]["trait_id"] == {"wordplay\x1b]0;owned\x07\u2028": 1}

    mixed = write_jsonl(tmp_path / "mixed.jsonl", [{"bad\nkey\x1b": [1]}, {"bad\nkey\x1b": "text"}])
    assert error_line(mixed).startswith(
        f"{mixed}:2: bad\\nkey\\x1b: a string here but a list of numbers at line 1"
    )


def test_rows_that_are_arrays_stop_at_the_first(tmp_path: Path) -> None:
    path = tmp_path / "arrays.jsonl"
    path.write_text("[1, 2, 3]\n" * 10_000)
    assert error_line(path) == f"{path}:1: -: rows must be objects (mappings) to be inspected"
    scalars = tmp_path / "scalars.json"
    scalars.write_text('[\n  {"chosen": []},\n  7\n]\n')
    assert error_line(scalars) == f"{scalars}:3: -: rows must be objects (mappings) to be inspected"


def test_a_huge_yaml_integer_and_a_json_duplicate_key_keep_their_line(tmp_path: Path) -> None:
    yaml_file = tmp_path / "questions.yaml"
    yaml_file.write_text("- id: q\n  samples_per_paraphrase: " + "9" * 5000 + "\n")
    assert error_line(yaml_file) == f"{yaml_file}:2: -: YAML: integer with more than 4300 digits"
    json_file = tmp_path / "pairs.json"
    json_file.write_text('[\n  {\n    "chosen": [],\n    "chosen": []\n  }\n]\n')
    assert error_line(json_file) == f"{json_file}:4: -: JSON: duplicate key 'chosen'"


def test_what_validate_accepts_is_summarised(tmp_path: Path) -> None:
    import polars as pl

    row = pair_row(0)
    row["chosen"][0]["content"] = "one\u2028two\u2029three\x85four"
    separators = tmp_path / "pairs.jsonl"
    separators.write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
    summary = json.loads(inspect(separators, "--json", code=0).stdout)
    assert summary["rows"] == 1 and summary["lengths"]["chosen"]["max"] == len(row["chosen"][0]["content"])

    categorical = tmp_path / "categorical.parquet"
    messages = pl.List(pl.Struct({"role": pl.Categorical, "content": pl.Categorical}))
    pl.DataFrame([pair_row(i) for i in range(3)]).with_columns(
        pl.lit("wordplay").cast(pl.Categorical).alias("trait_id"),
        *(pl.col(name).cast(messages) for name in ("prompt", "chosen", "rejected")),
    ).write_parquet(categorical)
    assert run_cli("validate", categorical).returncode == 0
    summary = json.loads(inspect(categorical, "--json", code=0).stdout)
    assert summary["rows"] == 3 and summary["counts"]["trait_id"] == {"wordplay": 3}
    assert summary["lengths"]["chosen"]["unit"] == "chars"
    inspect(categorical, code=0)


def test_a_file_mixing_conversational_and_plain_string_rows(tmp_path: Path) -> None:
    plain = {"prompt": "Hi?", "chosen": "Yes.", "rejected": "No."}
    path = write_jsonl(tmp_path / "pairs.jsonl", [pair_row(0), plain])
    assert error_line(path).startswith(f"{path}:2: prompt: a string here but a list of mappings at line 1")
    array = tmp_path / "pairs.json"
    array.write_text(json.dumps([plain, pair_row(1)], indent=2))
    line = error_line(array)
    assert line.startswith(f"{array}:7: prompt: a list of mappings here but a string at line 2")


@pytest.mark.parametrize("name", ["pairs.parquet", "pairs.json", "pairs.yaml", "pairs.jsonl"])
def test_a_corpus_without_rows(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        write_parquet(tmp_path / "one.parquet", [pair_row(0)])
        pq.write_table(pq.read_table(tmp_path / "one.parquet").slice(0, 0), path)
    else:
        path.write_text("" if name.endswith(".jsonl") else "[]\n")
    expected = "file is empty" if name.endswith(".jsonl") else "file holds no rows"
    assert error_line(path) == f"{path}:-: -: {expected}"
