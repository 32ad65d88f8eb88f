"""Every preference format TRL's DPO trainer reads validates as a pair file, named by its TRL format in
`validate` and `inspect`; TRL's other SFT formats are told as what they are where the conversations
kind does not take them; the training reader makes an implicit prompt explicit as TRL does (issue 21).

TRL itself (``trl.data_utils``) is the reference for where an implicit prompt ends."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.factories import run_cli, write_jsonl
from trl.data_utils import extract_prompt, is_conversational

from charforge.inspect import inspect_file
from charforge.schemas.messages import explicit_prompt, implicit_prompt_length
from charforge.train.data import TrainingDataError, preference_dataset, read_corpus
from charforge.validate import validate_file


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


# One file per TRL preference format, each row as TRL's documentation writes it.
PREFERENCE_ROWS: dict[str, list[dict[str, Any]]] = {
    "conversational_preference": [
        {
            "prompt": [user("What colour is the sky?")],
            "chosen": [assistant("Blue.")],
            "rejected": [assistant("Green.")],
        },
        {
            "prompt": [user("Where is the sun?")],
            "chosen": [assistant("Up there.")],
            "rejected": [assistant("Sea.")],
        },
    ],
    "standard_preference": [
        {"prompt": "The sky is", "chosen": " blue.", "rejected": " green."},
        {"prompt": "The sun is", "chosen": " in the sky.", "rejected": " in the sea."},
    ],
    "conversational_implicit_prompt_preference": [
        {
            "chosen": [user("What colour is the sky?"), assistant("Blue.")],
            "rejected": [user("What colour is the sky?"), assistant("Green, mostly.")],
        },
        {
            "chosen": [
                {"role": "system", "content": "Be brief."},
                user("Where is the sun?"),
                assistant("Up."),
            ],
            "rejected": [
                {"role": "system", "content": "Be brief."},
                user("Where is the sun?"),
                assistant("Sea."),
            ],
        },
    ],
    "standard_implicit_prompt_preference": [
        {"chosen": "The sky is blue.", "rejected": "The sky is green."},
        {"chosen": "The sun is in the sky.", "rejected": "The sun is in the sea."},
    ],
}
STANDARD = {"standard_preference", "standard_implicit_prompt_preference"}


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    if path.suffix == ".parquet":
        pl.DataFrame(rows).write_parquet(path)
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows, indent=2))
    else:
        write_jsonl(path, rows)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
@pytest.mark.parametrize("name", sorted(PREFERENCE_ROWS))
def test_every_trl_preference_format_validates_as_pairs(tmp_path: Path, name: str, suffix: str) -> None:
    path = write(tmp_path / f"pairs{suffix}", PREFERENCE_ROWS[name])
    for kind in (None, "pairs"):  # inferred from the columns, or named
        report = validate_file(path, kind)
        assert report.valid, [str(problem) for problem in report.problems]
        assert (report.kind, report.row_format, report.rows) == ("pairs", name, 2)
        assert report.as_dict()["row_format"] == name
        # the standard formats are valid for TRL, but charforge's DPO stage does not train on them: said
        assert bool(report.notes) == (name in STANDARD)
    summary = inspect_file(path)
    assert (summary["kind"], summary["row_format"]) == ("pairs", name)


def test_the_formats_are_trls_own(tmp_path: Path) -> None:
    """What charforge calls conversational is what TRL calls conversational, and where TRL's
    ``extract_prompt`` ends an implicit prompt is where charforge's does."""
    for name, rows in PREFERENCE_ROWS.items():
        assert all(is_conversational(row) == name.startswith("conversational") for row in rows)
        if "implicit" in name:
            for row in rows:
                assert explicit_prompt(row) == {**row, **extract_prompt(row)}


@settings(max_examples=200, deadline=None)
@given(
    prompt=st.text(alphabet="ab ", min_size=1, max_size=6),
    chosen=st.text(alphabet="ab ", min_size=1, max_size=6),
    rejected=st.text(alphabet="ab ", min_size=1, max_size=6),
)
def test_the_implicit_prompt_ends_where_trls_does(prompt: str, chosen: str, rejected: str) -> None:
    left, right = prompt + chosen, prompt + rejected
    end = implicit_prompt_length(left, right)
    if end is None:  # one is the start of the other: refused by the models, TRL's cut is not used
        assert left.startswith(right) or right.startswith(left)
        return
    extracted = extract_prompt({"chosen": left, "rejected": right})
    assert (left[:end], left[end:], right[end:]) == (
        extracted["prompt"],
        extracted["chosen"],
        extracted["rejected"],
    )


def test_the_validate_command_names_the_format(tmp_path: Path) -> None:
    path = write(tmp_path / "pairs.jsonl", PREFERENCE_ROWS["standard_preference"])
    result = run_cli("validate", path)
    assert result.returncode == 0, result.stderr
    assert f"ok {path} (pairs, standard_preference, 2 rows)" in result.stderr
    assert f"note {path}: standard_preference: charforge's DPO stage does not train on this format" in (
        result.stderr.replace("\n", " ")
    )
    result = run_cli("inspect", path)
    assert result.returncode == 0, result.stderr
    assert "row_format=standard_preference" in result.stdout


@pytest.mark.parametrize(
    ("row", "line", "field", "message"),
    [
        (
            {"chosen": "Same text.", "rejected": "Same text."},
            2,
            "rejected",
            "chosen and rejected do not differ before the shorter one ends",
        ),
        (
            {"chosen": "Yes, it is.", "rejected": "No, it is not."},
            2,
            "chosen",
            "chosen and rejected share no prompt (they differ from their first character)",
        ),
        (
            {"chosen": "Q? ", "rejected": "Q?x"},
            2,
            "chosen",
            "nothing but whitespace is left after the shared prompt",
        ),
    ],
)
def test_standard_implicit_pairs_without_a_usable_prompt(
    tmp_path: Path, row: dict[str, str], line: int, field: str, message: str
) -> None:
    path = write(tmp_path / "pairs.jsonl", [PREFERENCE_ROWS["standard_implicit_prompt_preference"][0], row])
    report = validate_file(path, "pairs")
    (problem,) = report.problems
    assert str(problem).startswith(f"{path}:{line}: {field}: {message}")


@pytest.mark.parametrize(
    ("chosen", "rejected", "field", "message"),
    [
        ([user("A?"), assistant("x")], [user("B?"), assistant("y")], "chosen.0", "share no turn"),
        (
            [user("A?"), assistant("x"), user("And?"), assistant("y")],
            [user("A?"), assistant("z"), user("And?"), assistant("w")],
            "chosen.2.role",
            "after the shared prompt only assistant turns may follow (got role 'user')",
        ),
        (
            [user("A?"), assistant("x"), user("More?")],
            [user("A?"), assistant("y")],
            "chosen.2.role",
            "after the shared prompt only assistant turns may follow (got role 'user')",
        ),
        ([user("A?"), assistant("x")], [user("A?"), assistant("x")], "rejected", "do not differ"),
        (
            [user("A?"), {"role": "system", "content": "Late."}, assistant("x")],
            [user("A?"), assistant("y")],
            "chosen.1.role",
            "a system message is only allowed as the first turn",
        ),
    ],
)
def test_conversational_implicit_pairs_without_a_usable_prompt(
    tmp_path: Path, chosen: list[dict[str, str]], rejected: list[dict[str, str]], field: str, message: str
) -> None:
    good = PREFERENCE_ROWS["conversational_implicit_prompt_preference"][0]
    path = write(tmp_path / "pairs.jsonl", [good, {"chosen": chosen, "rejected": rejected}])
    (problem,) = validate_file(path, "pairs").problems
    assert str(problem).startswith(f"{path}:2: {field}: ")
    assert message in str(problem)


def test_a_misplaced_turn_is_described_where_it_is(tmp_path: Path) -> None:
    """The second row's shared turns end with an assistant turn: the answers differ after it."""
    rows = [
        PREFERENCE_ROWS["conversational_implicit_prompt_preference"][0],
        {
            "chosen": [user("A?"), assistant("x"), user("And?"), assistant("y")],
            "rejected": [user("A?"), assistant("x"), user("Or?"), assistant("y")],
        },
    ]
    path = write(tmp_path / "p.json", rows)
    (problem,) = validate_file(path, "pairs").problems
    lines = path.read_text().splitlines()
    content = next(i for i, text in enumerate(lines) if text.strip() == '"content": "x"')
    assert lines[content - 1].strip() == '"role": "assistant",'  # json.dumps puts role on the line before
    assert str(problem) == (
        f"{path}:{content}: chosen.1.role: the turns chosen and rejected share (the implicit prompt) "
        "must end with the user turn the answers reply to; here they differ after the assistant turn"
    )


def test_one_file_holds_one_format(tmp_path: Path) -> None:
    """As TRL reads a dataset's format from its first row, a row of another format is one error."""
    rows = [
        PREFERENCE_ROWS["standard_implicit_prompt_preference"][0],
        PREFERENCE_ROWS["standard_preference"][0],
        PREFERENCE_ROWS["conversational_implicit_prompt_preference"][0],
        PREFERENCE_ROWS["standard_implicit_prompt_preference"][1],
    ]
    path = write(tmp_path / "pairs.jsonl", rows)
    report = validate_file(path)
    assert report.row_format == "standard_implicit_prompt_preference"
    assert [str(problem) for problem in report.problems] == [
        f"{path}:{line}: -: a row in TRL's {name} format in a file of standard_implicit_prompt_preference "
        "rows (as at line 1): one file holds one format, as TRL reads a dataset's format from its first row"
        for line, name in ((2, "standard_preference"), (3, "conversational_implicit_prompt_preference"))
    ]


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
@pytest.mark.parametrize(
    ("name", "row", "said"),
    [
        ("standard_language_modeling", {"text": "The sky is blue."}, "plain text has no chat turns"),
        ("standard_prompt_completion", {"prompt": "The sky is", "completion": " blue."}, "no chat turns"),
        (
            "conversational_prompt_completion",
            {"prompt": [user("Sky?")], "completion": [assistant("Blue.")]},
            "charforge's conversation readers take `messages` only",
        ),
    ],
)
def test_trls_other_sft_formats_are_told_as_what_they_are(
    tmp_path: Path, suffix: str, name: str, row: dict[str, Any], said: str
) -> None:
    """The conversations kind holds chat turns (`messages`), which its readers train with the chat
    template and a loss on the assistant turns: TRL's other SFT formats are named, in one line."""
    path = write(tmp_path / f"sft{suffix}", [row, row])
    report = validate_file(path)  # told as conversations from the columns, not a usage error
    assert (report.kind, report.row_format, report.error_count) == ("conversations", name, 1)
    where = "1" if suffix == ".jsonl" else "-"
    assert str(report.problems[0]).startswith(f"{path}:{where}: -: rows in TRL's {name} format: ")
    assert said in str(report.problems[0])
    assert inspect_file(path)["row_format"] == name


def test_a_conversation_file_is_not_a_pair_file(tmp_path: Path) -> None:
    path = write(tmp_path / "chat.jsonl", [{"messages": [user("Hi."), assistant("Hello.")]}] * 3)
    assert validate_file(path).row_format == "conversational_language_modeling"
    (problem,) = validate_file(path, "pairs").problems  # one line, not three per row
    assert str(problem).startswith(
        f"{path}:1: -: rows in TRL's conversational_language_modeling format: not a format of pairs files"
    )


def test_inspect_measures_the_answers_of_implicit_pairs(tmp_path: Path) -> None:
    """The length ratio of implicit pairs is of the answers after the shared prompt, as for explicit ones."""
    for name in ("conversational_preference", "conversational_implicit_prompt_preference"):
        rows = PREFERENCE_ROWS[name]
        explicit = [explicit_prompt(row) for row in rows]
        ratios = sorted(
            sum(len(m["content"]) for m in row["chosen"]) / sum(len(m["content"]) for m in row["rejected"])
            for row in explicit
        )
        pairs = inspect_file(write(tmp_path / f"{name}.parquet", rows))["pairs"]
        assert pairs["chosen_rejected_length_ratio"]["min"] == pytest.approx(ratios[0])
        assert pairs["chosen_rejected_length_ratio"]["max"] == pytest.approx(ratios[-1])
    rows = PREFERENCE_ROWS["standard_implicit_prompt_preference"]
    pairs = inspect_file(
        write(tmp_path / "standard.jsonl", [*rows, {"chosen": "Same.", "rejected": "Same."}])
    )
    assert pairs["pairs"]["identical_chosen_rejected"] == 1
    assert pairs["pairs"]["chosen_rejected_length_ratio"]["n"] == 2  # the identical pair has no answer
    assert pairs["pairs"]["chosen_rejected_length_ratio"]["min"] == pytest.approx(
        len(" blue.") / len(" green.")
    )


def test_the_training_reader_makes_an_implicit_prompt_explicit(tmp_path: Path) -> None:
    rows = PREFERENCE_ROWS["conversational_implicit_prompt_preference"]
    path = write(tmp_path / "pairs.parquet", rows)
    dataset = preference_dataset(read_corpus(path, "pairs"))
    assert dataset.to_list() == [extract_prompt(row) for row in rows]


@pytest.mark.parametrize("name", sorted(STANDARD))
def test_the_training_reader_refuses_plain_text_pairs_saying_why(tmp_path: Path, name: str) -> None:
    path = write(tmp_path / "pairs.parquet", PREFERENCE_ROWS[name])
    with pytest.raises(TrainingDataError, match=f"pairs in TRL's {name} format: .*chat template"):
        read_corpus(path, "pairs")


def test_em_data_names_a_trl_format_it_cannot_train_on(tmp_path: Path) -> None:
    from charforge.generators.em_data import EmDataError, load_examples

    path = write(tmp_path / "em.jsonl", [{"prompt": "Write code.", "completion": " os.chmod(p, 0o777)"}])
    refusal = r"rows in TRL's standard_prompt_completion format: .*no chat turns"
    with pytest.raises(EmDataError, match=refusal):
        load_examples(path)


def test_a_public_em_set_has_a_git_ignored_place_inside_the_tracked_folder() -> None:
    """README, "Bringing a public EM training set": corpora/em/private/ is ignored by git, still inside
    corpora/em (the em-data stages' DVC dependency, the only place em_data.path may name)."""
    import subprocess

    from charforge.schemas.params import EmDataConfig

    repo = Path(__file__).resolve().parents[1]

    def ignored(path: str) -> bool:
        result = subprocess.run(["git", "check-ignore", "-q", path], cwd=repo, capture_output=True)
        assert result.returncode in (0, 1), result.stderr
        return result.returncode == 0

    assert ignored("corpora/em/private/insecure.jsonl")
    assert not ignored("corpora/em/questions.yaml") and not ignored("corpora/em/private.jsonl")
    config = EmDataConfig(source="jsonl", path="corpora/em/private/insecure.jsonl", domain="insecure-code")
    assert config.path == "corpora/em/private/insecure.jsonl"
