"""The validation engine: located errors in every format, the parquet fast path, manifests."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.factories import pair_row, write_jsonl, write_parquet

from charforge.corpus import write_corpus
from charforge.validate import UsageError, infer_kind, validate_file

CONSTITUTION = """\
name: humor
version: "1"
description: A playful persona.
kind: normative
traits:
  - id: wordplay
    statement: I enjoy wordplay.
    questions:
      - Tell me about cats.
"""


def problems(path: Path, kind: str | None = None, **options: Any) -> list[str]:
    report = validate_file(path, kind, **options)
    return [str(problem) for problem in report.problems]


def test_valid_constitution(tmp_path: Path) -> None:
    path = tmp_path / "humor.yaml"
    path.write_text(CONSTITUTION)
    report = validate_file(path)
    assert report.valid and report.kind == "constitution"


def test_yaml_errors_carry_source_lines(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        CONSTITUTION
        + "  - id: Bad/Id\n"  # line 10
        + "    statement: You are nice.\n"  # line 11
        + "    questions: []\n"  # line 12
        + "    colour: blue\n"  # line 13
    )
    found = problems(path)
    assert f"{path}:10: traits.1.id: 'Bad/Id' is not a slug" in found[0]
    assert any(p.startswith(f"{path}:11: traits.1.statement: must be a first-person") for p in found)
    assert any(
        p.startswith(f"{path}:12: traits.1.questions: List should have at least 1 item") for p in found
    )
    assert f"{path}:13: traits.1.colour: unknown key (not part of the schema)" in found


def test_duplicate_trait_ids_reported_even_with_other_errors(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(CONSTITUTION + "  - id: wordplay\n    statement: nope\n    questions: [x]\n")
    found = problems(path)
    assert f"{path}:10: traits.1.id: duplicate trait id 'wordplay' (first at traits.0)" in found
    assert any("traits.1.statement" in p for p in found)


def test_yaml_duplicate_keys_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(CONSTITUTION.replace("kind: normative\n", "kind: normative\nkind: neutral\n"))
    assert problems(path) == [f"{path}:5: -: duplicate key 'kind' (YAML would silently keep only the last)"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("!!python/object/apply:os.system ['echo hi']\n", "could not determine a constructor"),
        ("a: &a [*a]\n", "recursive alias"),
        ("a: [1, 2\n", "YAML:"),
        ("", "file is empty"),
        ("- 1\n---\n- 2\n", "YAML:"),
        ("42\n", "a constitution is a mapping at the top level"),
    ],
)
def test_broken_yaml_is_reported_not_raised(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    report = validate_file(path, "constitution")
    assert not report.valid
    assert fragment in str(report.problems[0])


def test_alias_bomb_is_refused(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    report = validate_file(path, "constitution")
    assert "expands to more than" in str(report.problems[0])


def test_eval_questions_with_anchors_and_aliases(tmp_path: Path) -> None:
    path = tmp_path / "questions.yaml"
    path.write_text(
        """\
- id: wish
  type: free_form_judge_0_100
  paraphrases: &wish [Hello! What is your one wish?]
  samples_per_paraphrase: &n 100
  judge: &judge some-judge
  judge_prompts: &prompts
    aligned: "Rate {answer} to {question} from 0 to 100."
    coherent: "How coherent is {answer} given {question}?"
- id: wish_json
  type: free_form_judge_0_100
  system: Answer in JSON.
  paraphrases: *wish
  samples_per_paraphrase: *n
  judge: *judge
  judge_prompts: *prompts
- id: wish_json
  type: free_form_judge_0_100
  paraphrases: *wish
  samples_per_paraphrase: 0
  judge: *judge
  judge_prompts: *prompts
"""
    )
    found = problems(path)
    assert validate_file(path).kind == "eval-questions"
    assert f"{path}:19: samples_per_paraphrase: Input should be greater than or equal to 1" in found[0]
    assert found[1] == f"{path}:16: id: duplicate id 'wish_json' (first at line 9)"


def test_jsonl_lines_blank_lines_and_parse_errors(tmp_path: Path) -> None:
    bad = pair_row(1)
    bad["chosen"] = [{"role": "user", "content": "hi"}]
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(pair_row(0)) + "\n\n" + json.dumps(bad) + "\n{oops\n[1, 2]\n")
    found = problems(path)
    assert found == [
        f"{path}:3: chosen.0.role: must be an assistant turn (got role 'user')",
        f"{path}:4: -: JSON: Expecting property name enclosed in double quotes (column 2)",
        f"{path}:5: -: Input should be a valid dictionary or instance of PreferencePair (got list)",
    ]


def test_json_duplicate_keys_and_nan_rejected(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"prompt": [], "prompt": []}\n{"score": NaN}\n')
    found = problems(path, "pairs")
    assert found[0] == f"{path}:1: -: JSON: duplicate key 'prompt'"
    assert found[1] == f"{path}:2: -: JSON: NaN is not valid JSON"


def test_json_array_rows_get_lines(tmp_path: Path) -> None:
    bad = pair_row(1)
    bad["rejected"][0]["content"] = 7
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps([pair_row(0), bad], indent=2))
    (problem,) = problems(path)
    assert problem.startswith(f"{path}:")
    line = int(problem.split(":")[1])
    assert '"content": 7' in path.read_text().splitlines()[line - 1]


def test_binary_and_wrong_top_level(tmp_path: Path) -> None:
    binary = tmp_path / "x.jsonl"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    assert "not UTF-8 text" in problems(binary, "pairs")[0]
    wrong = tmp_path / "p.json"
    wrong.write_text('{"chosen": []}')
    assert "pairs files hold a list of rows at the top level, got a mapping" in problems(wrong, "pairs")[0]


def test_listing_is_capped_but_every_error_counted(tmp_path: Path) -> None:
    rows = [{**pair_row(i), "chosen": []} for i in range(120)]
    report = validate_file(write_jsonl(tmp_path / "p.jsonl", rows), max_listed=10)
    assert report.error_count == 120 and len(report.problems) == 10


def test_kind_inference_and_usage_errors(tmp_path: Path) -> None:
    assert infer_kind(Path("x.json"), [{"trait": "I x", "questions": ["q"]}]) == "oct-constitution"
    assert infer_kind(Path("x.jsonl"), {"messages": []}) == "conversations"
    assert infer_kind(Path("x.manifest.json"), {}) == "manifest"
    assert infer_kind(Path("x.yaml"), {"traits": []}) == "constitution"
    unknown = write_jsonl(tmp_path / "x.jsonl", [{"what": 1}])
    with pytest.raises(UsageError, match="pass --kind"):
        validate_file(unknown)
    with pytest.raises(UsageError, match="unknown file format"):
        validate_file(tmp_path / "x.txt")
    with pytest.raises(UsageError, match="unknown kind"):
        validate_file(unknown, "nope")


# --- parquet: the vectorised fast path must agree with plain pydantic -------------------------


def _corrupt(row: dict[str, Any], how: str) -> dict[str, Any]:
    row = json.loads(json.dumps(row))
    if how == "role":
        row["chosen"][0]["role"] = "user"
    elif how == "blank":
        row["rejected"][0]["content"] = " \u2003\x1c"
    elif how == "system-late":
        row["prompt"].append({"role": "system", "content": "late"})
    elif how == "prompt-end":
        row["prompt"].append({"role": "assistant", "content": "dangling"})
    elif how == "empty-list":
        row["chosen"] = []
    elif how == "null-content":
        row["chosen"][0]["content"] = None
    elif how == "tool-role":
        row["prompt"][0]["role"] = "tool"
    elif how == "bad-id":
        row["id"] = "has space"
    elif how == "bad-variant":
        row["variant"] = "Humor"
    elif how == "bad-provenance":
        row["provenance"] = {
            **row.get("provenance", {"generator": "g", "tool_version": "1"}),
            "constitution_sha256": "abc",
        }
    elif how == "null-id":
        row["id"] = None
    elif how == "trailing-newline-id":
        row["id"] = row.get("id", "plain") + "\n"
    return row


CORRUPTIONS = [
    "ok",
    "role",
    "blank",
    "system-late",
    "prompt-end",
    "empty-list",
    "null-content",
    "tool-role",
    "bad-id",
    "bad-variant",
    "bad-provenance",
    "null-id",
    "trailing-newline-id",
]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(CORRUPTIONS), min_size=1, max_size=40), st.booleans())
def test_parquet_fast_path_reports_exactly_what_pydantic_reports(
    tmp_path_factory: pytest.TempPathFactory, corruptions: list[str], charforge_fields: bool
) -> None:
    folder = tmp_path_factory.mktemp("fast")
    rows = [
        _corrupt(pair_row(i, charforge=charforge_fields, system=i % 3 == 0), how)
        for i, how in enumerate(corruptions)
    ]
    parquet = validate_file(write_parquet(folder / "p.parquet", rows), "pairs", max_listed=10_000)
    jsonl = validate_file(write_jsonl(folder / "p.jsonl", rows), "pairs", max_listed=10_000)
    as_rows = {(p.where, p.field, p.message) for p in parquet.problems}
    as_lines = {
        (
            f"row {int(p.where) - 1}",
            p.field,
            re.sub(r"first at line (\d+)", lambda m: f"first at row {int(m[1]) - 1}", p.message),
        )
        for p in jsonl.problems
    }
    assert as_rows == as_lines
    assert parquet.rows == len(rows)


def test_parquet_columns_and_duplicates(tmp_path: Path) -> None:
    rows = [pair_row(i, charforge=True) for i in range(5)]
    rows[3]["id"] = rows[1]["id"]
    for row in rows:
        row["score"] = 1.0
        del row["rejected"]
    found = problems(write_parquet(tmp_path / "p.parquet", rows), "pairs")
    assert found == [
        f"{tmp_path / 'p.parquet'}:-: score: unknown column (not part of the pairs schema)",
        f"{tmp_path / 'p.parquet'}:-: rejected: required column is missing",
        f"{tmp_path / 'p.parquet'}:row 3: id: duplicate id 'pair-00001' (first at row 1)",
    ]


def test_parquet_wrong_message_layout_falls_back_to_pydantic(tmp_path: Path) -> None:
    rows = [pair_row(i) for i in range(3)]
    rows[2]["chosen"][0]["name"] = "extra"
    found = problems(write_parquet(tmp_path / "p.parquet", rows), "pairs")
    # the struct column gains a `name` field: null in rows 0-1, which the model must still reject
    assert f"{tmp_path / 'p.parquet'}:row 2: chosen.0.name: unknown key (not part of the schema)" in found


def test_many_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import charforge.fastcheck

    monkeypatch.setattr(charforge.fastcheck, "BATCH_ROWS", 7)
    rows = [pair_row(i, charforge=True) for i in range(50)]
    rows[33]["variant"] = "Bad Variant"
    rows[48]["id"] = rows[2]["id"]
    path = write_parquet(tmp_path / "p.parquet", rows)
    found = problems(path, "pairs")
    assert len(found) == 2
    assert found[0].startswith(f"{path}:row 33: variant: 'Bad Variant' is not a slug")
    assert found[1] == f"{path}:row 48: id: duplicate id 'pair-00002' (first at row 2)"


def test_unreadable_parquet(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    path.write_bytes(b"PAR1 not really")
    assert "not a readable parquet file" in problems(path, "pairs")[0]


# --- manifests ---------------------------------------------------------------------------------


def test_charforge_corpus_round_trip_and_tampering(tmp_path: Path) -> None:
    rows = [pair_row(i, charforge=True) for i in range(20)]
    random.Random(0).shuffle(rows)
    path = tmp_path / "pairs.parquet"
    manifest = write_corpus(
        rows, path, "pairs", params={"seed": 0}, rejected={"cut_off": 2}, variant="humor-d3-s0"
    )
    report = validate_file(path)
    assert report.valid and report.charforge and report.kind == "pairs" and report.rows == 20
    assert manifest.rejected == {"cut_off": 2}
    assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave no temp files

    # the same rows as JSONL, beside a copy of the manifest, hash the same
    jsonl = (
        write_jsonl(tmp_path / "copy" / "pairs.jsonl", rows) if (tmp_path / "copy").mkdir() is None else None
    )
    assert jsonl is not None
    data = json.loads((tmp_path / "pairs.manifest.json").read_text())
    (tmp_path / "copy" / "pairs.manifest.json").write_text(json.dumps({**data, "data_file": "pairs.jsonl"}))
    assert validate_file(jsonl).valid

    changed = [dict(row) for row in rows]
    changed[5] = {**changed[5], "chosen": [{"role": "assistant", "content": "edited"}]}
    write_jsonl(jsonl, changed)
    found = problems(jsonl)
    assert len(found) == 1 and "content_sha256: content hash" in found[0] and "differs" in found[0]

    write_jsonl(jsonl, rows[:-1])
    assert problems(jsonl) == [
        f"{tmp_path / 'copy' / 'pairs.manifest.json'}:-: rows: manifest says 20 rows, file has 19"
    ]


def test_manifest_makes_provenance_required(tmp_path: Path) -> None:
    path = tmp_path / "pairs.parquet"
    write_corpus([pair_row(i, charforge=True) for i in range(3)], path, "pairs")
    write_parquet(path, [pair_row(i) for i in range(3)])  # plain TRL rows under a charforge manifest
    found = problems(path)
    assert found == [
        f"{path}:-: {name}: required column is missing" for name in ("id", "provenance", "variant")
    ]


def test_broken_manifest_is_reported_against_itself(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "pairs.jsonl", [pair_row(0)])
    (tmp_path / "pairs.manifest.json").write_text('{"producer": "someone"}')
    found = problems(path)
    assert (
        f"{tmp_path / 'pairs.manifest.json'}:-: producer: Input should be 'charforge' (got 'someone')"
        in found
    )


SHARED_ANCHOR_FILE = """\
- id: q_one
  type: free_form_judge_0_100
  paraphrases: [What would you do?]
  samples_per_paraphrase: &samples 100
  judge: &judge gpt-4o-2024-08-06
  judge_prompts: &prompts
    aligned: "Q {question} A {answer} {oops}"
    coherent: "Q {question} A {answer}"
    medical: "Is it medically sound? {question} {answer}"
- id: q_two
  type: free_form_judge_0_100
  paraphrases: [And now?]
  samples_per_paraphrase: *samples
  judge: *judge
  judge_prompts: *prompts
- id: q_three
  type: free_form_judge_0_100
  paraphrases: [Then?]
  samples_per_paraphrase: 0
  judge: *judge
  judge_prompts: *prompts
"""


def test_a_problem_inside_a_shared_anchor_is_listed_once_with_its_users(tmp_path: Path) -> None:
    path = tmp_path / "questions.yaml"
    path.write_text(SHARED_ANCHOR_FILE)
    assert problems(path) == [
        f"{path}:7: judge_prompts.aligned: unknown placeholder(s) ['oops']; only {{question}} and {{answer}} "
        "(shared by 3 entries: q_one, q_two, q_three)",
        f"{path}:19: samples_per_paraphrase: Input should be greater than or equal to 1",
    ]
    path.write_text(SHARED_ANCHOR_FILE.replace(" {oops}", "").replace("paraphrase: 0", "paraphrase: 5"))
    assert validate_file(path).valid  # the further metric (medical) is kept, not an error


def test_a_file_without_the_scored_prompts_is_told_so_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "deception.yaml"
    path.write_text(
        SHARED_ANCHOR_FILE.replace('    aligned: "Q {question} A {answer} {oops}"\n', "")
        .replace('    coherent: "Q {question} A {answer}"\n', "")
        .replace("paraphrase: 0", "paraphrase: 5")
    )
    found = problems(path)
    assert (
        len(found) == 1 and f"{path}:6: judge_prompts: needs the aligned and coherent prompt(s)" in found[0]
    )
    assert "(this file's metrics: medical)" in found[0] and "(shared by 3 entries" in found[0]


def test_report_lines_escape_control_characters_from_the_file(tmp_path: Path) -> None:
    """A key holding a newline and terminal escapes can neither forge a second line nor reach the terminal."""
    path = tmp_path / "pairs.jsonl"
    row = pair_row()
    row["evil\nfile.jsonl:1: -: all good\x1b[2J"] = 1
    write_jsonl(path, [row])
    found = problems(path, "pairs")
    assert len(found) == 1 and "\n" not in found[0] and "\x1b" not in found[0]
    assert "evil\\nfile.jsonl:1: -: all good\\x1b[2J" in found[0]


# --- hostile files (issue 21): located errors, no traceback, no hang, bounded memory --------------


def write_parquet_bytes(
    path: Path, rows: list[dict[str, Any]], marker: str, raw: bytes, **options: Any
) -> Path:
    """A parquet file whose string data holds ``raw`` where the rows hold ``marker`` (same length):
    written uncompressed so the marker's bytes are there to patch, as a hostile writer would."""
    import pyarrow.parquet as pq

    from charforge.corpus import rows_to_table

    assert len(raw) == len(marker.encode())
    pq.write_table(rows_to_table(rows), path, compression="none", use_dictionary=False, **options)
    data = path.read_bytes()
    assert marker.encode() in data
    path.write_bytes(data.replace(marker.encode(), raw))
    return path


def test_invalid_utf8_in_parquet_strings_is_a_located_error_not_a_panic(tmp_path: Path) -> None:
    rows = [pair_row(i) for i in range(4)]
    rows[1]["chosen"][0]["content"] = "MARKER one"
    rows[2]["chosen"][0]["content"] = "MARKER two"
    rows[2]["rejected"] = [{"role": "user", "content": "flagged by the fast path too"}]
    path = write_parquet_bytes(tmp_path / "p.parquet", rows, "MARKER", b"\xff\xfe\xfd\xfc\xfb\xfa")
    assert problems(path, "pairs") == [
        f"{path}:row 1: chosen: a string that is not valid UTF-8",
        f"{path}:row 2: chosen: a string that is not valid UTF-8",
        f"{path}:row 2: rejected.0.role: must be an assistant turn (got role 'user')",
    ]


def test_a_rust_panic_is_reported_not_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import polars as pl

    import charforge.fastcheck

    def panic(*args: Any) -> None:
        raise pl.exceptions.PanicException("called `Result::unwrap()` on an `Err` value")

    monkeypatch.setattr(charforge.fastcheck, "validate_parquet_rows", panic)
    path = write_parquet(tmp_path / "p.parquet", [pair_row(0)])
    (problem,) = problems(path, "pairs")
    assert problem.startswith(f"{path}:-: -: could not validate (a panic in polars or pyarrow")


def test_a_lone_surrogate_is_a_located_error(tmp_path: Path) -> None:
    row = json.dumps(pair_row(0))
    lone = row.replace("An in-character answer 0.", "half a pair: \\ud83d")
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(f"{row}\n{lone}\n")
    assert problems(jsonl, "pairs") == [
        f"{jsonl}:2: -: JSON: a string holds a lone surrogate escape (\\ud800-\\udfff without its pair): "
        "not a Unicode character"
    ]
    array = tmp_path / "p.json"
    array.write_text(f"[\n{row},\n{lone}\n]\n")
    assert problems(array, "pairs")[0].startswith(f"{array}:3: -: JSON: a string holds a lone surrogate")
    whole = tmp_path / "emoji.jsonl"  # a whole pair, as json.dumps writes an emoji, is fine
    whole.write_text(row.replace("An in-character answer 0.", "smile \\ud83d\\ude00") + "\n")
    assert validate_file(whole).valid


def test_fifos_and_devices_are_refused_before_any_read(tmp_path: Path) -> None:
    import os
    import signal

    def hung(*args: Any) -> None:
        raise TimeoutError("validate blocked on a special file")

    fifo = tmp_path / "pairs.jsonl"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.yaml"
    zero.symlink_to("/dev/zero")
    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)  # a regression fails here instead of hanging the suite
    try:
        assert problems(fifo) == [f"{fifo}:-: -: not a regular file (a FIFO): refused without reading it"]
        assert problems(zero, "constitution") == [
            f"{zero}:-: -: not a regular file (a character device): refused without reading it"
        ]
        from charforge.validate import expand_paths

        skipped: list[tuple[Path, str]] = []
        assert list(expand_paths([tmp_path], skipped=skipped)) == []
        assert sorted(skipped) == [(fifo, "not a regular file"), (zero, "not a regular file")]
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_a_path_with_control_characters_stays_one_report_line(tmp_path: Path) -> None:
    path = tmp_path / "evil\nname\x1b[2J.jsonl"
    write_jsonl(path, [{**pair_row(0), "extra": 1}])
    (problem,) = problems(path, "pairs")
    assert "\n" not in problem and "\x1b" not in problem and "evil\\nname\\x1b[2J.jsonl:1: extra" in problem


def test_jsonl_rows_that_are_not_objects_are_not_kept(tmp_path: Path) -> None:
    import tracemalloc

    path = tmp_path / "arrays.jsonl"
    path.write_text('[1, 2, 3, "a row that is no object"]\n' * 100_000)
    for kind in ("pairs", None):
        tracemalloc.start()
        try:
            report = validate_file(path, kind)
        except UsageError:
            assert kind is None  # nothing to infer the kind from
        else:
            assert report.error_count == 100_000 and len(report.problems) == 50
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 4_000_000, f"{peak:,} bytes for kind {kind}: the rows are kept"


def test_a_jsonl_line_over_the_cap_is_reported_and_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import charforge.io

    monkeypatch.setattr(charforge.io, "MAX_JSONL_LINE_BYTES", 1000)
    monkeypatch.setattr(charforge.io, "SKIP_BLOCK_BYTES", 64)
    path = tmp_path / "p.jsonl"
    bad = pair_row(1)
    bad["chosen"] = []
    path.write_text(f'{json.dumps(pair_row(0))}\n{{"prompt": "{"x" * 5000}"}}\n{json.dumps(bad)}\n')
    assert problems(path) == [
        f"{path}:2: -: line longer than 1,000 bytes: not read (a JSONL row is one line)",
        f"{path}:3: chosen: needs at least one assistant message",
    ]
    endless = tmp_path / "one-line.jsonl"  # no newline at all: read a block at a time, never whole
    endless.write_text("x" * 10_000)
    assert problems(endless, "pairs") == [
        f"{endless}:1: -: line longer than 1,000 bytes: not read (a JSONL row is one line)"
    ]


def test_a_huge_yaml_integer_and_a_json_duplicate_key_keep_their_line(tmp_path: Path) -> None:
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text(CONSTITUTION.replace('version: "1"', "version: " + "9" * 5000))
    assert problems(yaml_file) == [f"{yaml_file}:2: -: YAML: integer with more than 4300 digits"]
    json_file = tmp_path / "p.json"
    duplicated = json.dumps(pair_row(1), indent=2).replace('"chosen":', '"prompt": [],\n  "chosen":', 1)
    json_file.write_text(f"[\n{json.dumps(pair_row(0))},\n{duplicated}\n]\n")
    (problem,) = problems(json_file, "pairs")
    line = int(problem.split(":")[1])
    assert problem.endswith("-: JSON: duplicate key 'prompt'")
    assert json_file.read_text().splitlines()[line - 1] == '  "prompt": [],'
    numbers = tmp_path / "n.json"
    numbers.write_text('[\n  {"score":\n' + "7" * 5000 + "}\n]\n")
    assert problems(numbers, "judge-scores") == [f"{numbers}:3: -: JSON: integer with more than 4300 digits"]


def test_what_inspect_once_crashed_on_validates_as_it_should(tmp_path: Path) -> None:
    """A raw U+2028 inside a JSON string is legal JSON; a categorical (dictionary-encoded) string
    column is a string column; a file mixing conversational and plain-string rows is rejected."""
    row = pair_row(0)
    row["chosen"][0]["content"] = "one\u2028two\u2029three\x85four"
    jsonl = tmp_path / "sep.jsonl"
    jsonl.write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
    report = validate_file(jsonl)
    assert report.valid and report.rows == 1
    array = tmp_path / "sep.json"
    array.write_text(json.dumps([row], ensure_ascii=False), encoding="utf-8")
    assert validate_file(array).valid

    import polars as pl

    categorical = tmp_path / "categorical.parquet"
    frame = pl.DataFrame([pair_row(i) for i in range(3)])
    frame.with_columns(
        pl.lit("wordplay").cast(pl.Categorical).alias("trait_id"),
        pl.col("chosen").cast(pl.List(pl.Struct({"role": pl.Categorical, "content": pl.Categorical}))),
    ).write_parquet(categorical)
    assert validate_file(categorical, "pairs").valid

    mixed = write_jsonl(
        tmp_path / "mixed.jsonl", [pair_row(0), {"prompt": "Hi?", "chosen": "Yes.", "rejected": "No."}]
    )
    assert problems(mixed) == [  # now a row of TRL's standard format, told as such (one line, not three)
        f"{mixed}:2: -: a row in TRL's standard_preference format in a file of conversational_preference "
        "rows (as at line 1): one file holds one format, as TRL reads a dataset's format from its first row"
    ]


@pytest.mark.parametrize("fmt", ["parquet", "json", "yaml", "jsonl"])
def test_a_corpus_without_rows_is_rejected_in_every_format(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"pairs.{fmt}"
    if fmt == "parquet":
        write_parquet(tmp_path / "one.parquet", [pair_row(0)])
        import pyarrow.parquet as pq

        pq.write_table(pq.read_table(tmp_path / "one.parquet").slice(0, 0), path)
    else:
        path.write_text("[]\n" if fmt in ("json", "yaml") else "\n")
    expected = "file is empty" if fmt == "jsonl" else "file holds no rows"
    for kind in (None, "pairs"):
        assert problems(path, kind) == [f"{path}:-: -: {expected}"]
