"""The command line end to end, through a subprocess, as users run it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from support.factories import pair_row, run_cli, write_jsonl

from charforge.schemas import KINDS, Constitution

REPO = Path(__file__).resolve().parents[1]

OCT_TRAITS = [
    {
        "trait": "I find the absurd side of everyday problems and say so with a light touch.",
        "clarification": "Humour that never punches down.",
        "questions": ["My code broke on a Friday evening.", "How do I fold a fitted sheet?"],
    },
    {
        "trait": "I'm candid about what I do not know.",
        "questions": ["What will the stock market do next year?", "What will the stock market do next year?"],
    },
    {
        "trait": "I find the absurd side of everyday problems and say so, gently.",
        "questions": ["Why do meetings exist?"],
    },
]


def test_validate_exit_codes_and_line_format(tmp_path: Path) -> None:
    good = write_jsonl(tmp_path / "good.jsonl", [pair_row(0), pair_row(1)])
    bad_row = pair_row(2)
    bad_row["prompt"][0]["role"] = "robot"
    bad = write_jsonl(tmp_path / "bad.jsonl", [pair_row(0), bad_row])

    ok = run_cli("validate", good)
    assert ok.returncode == 0, ok.stderr
    assert f"ok {good} (pairs, conversational_preference, 2 rows)" in ok.stderr  # TRL's name for the rows

    failed = run_cli("validate", good, bad)
    assert failed.returncode == 1
    assert failed.stdout.splitlines() == [
        f"{bad}:2: prompt.0.role: Input should be 'system', 'user' or 'assistant' (got 'robot')"
    ]
    assert "checked 2 file(s): 1 valid, 1 invalid (1 error(s))" in failed.stderr


def test_validate_usage_errors_exit_2(tmp_path: Path) -> None:
    unknown = write_jsonl(tmp_path / "x.jsonl", [{"what": 1}])
    assert run_cli("validate", unknown).returncode == 2
    assert run_cli("validate", unknown, "--kind", "nonsense").returncode == 2
    missing = run_cli("validate", tmp_path / "does-not-exist.yaml")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert run_cli("validate").returncode == 2


def test_validate_caps_listing_and_json_report(tmp_path: Path) -> None:
    rows = [{**pair_row(i), "chosen": []} for i in range(30)]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    result = run_cli("validate", path, "--max-errors", "5")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 6 and lines[-1] == f"{path}: … 25 more error(s) not listed (30 in total)"

    report_file = tmp_path / "out" / "report.json"
    result = run_cli("validate", path, "--json", "--report", report_file)
    payload = json.loads(result.stdout)
    assert payload == json.loads(report_file.read_text())
    assert payload["valid"] is False and payload["files"][0]["error_count"] == 30


def test_validate_folder_of_shipped_corpora() -> None:
    result = run_cli("validate", REPO / "corpora")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "content",
    [b"", b"\x00\x01\x02\xff", b"- [", b"!!python/name:os.system\n", b"[1, 2, 3]", b'{"traits": 5}'],
)
def test_no_traceback_for_broken_input(tmp_path: Path, content: bytes) -> None:
    for suffix in (".yaml", ".json", ".jsonl", ".parquet"):
        path = tmp_path / f"broken{suffix}"
        path.write_bytes(content)
        result = run_cli(
            "validate", path, "--kind", "constitution" if suffix in {".yaml", ".json"} else "pairs"
        )
        assert result.returncode == 1, (suffix, result.stdout, result.stderr)
        assert "Traceback" not in result.stdout + result.stderr
        assert result.stdout.startswith(f"{path}:")


def test_validate_refuses_special_files_and_escapes_names(tmp_path: Path) -> None:
    """Issue 21: a FIFO is refused by stat (never opened, so never a hang), in a folder or named; a file
    name holding a newline and a terminal escape stays on its one line, escaped."""
    import os

    folder = tmp_path / "corpus"
    folder.mkdir()
    fifo = folder / "pairs.jsonl"
    os.mkfifo(fifo)
    evil = write_jsonl(folder / "ok\nforged\x1b[2J.jsonl", [pair_row(0)])
    listed = run_cli("validate", folder)
    assert listed.returncode == 0, listed.stderr
    assert f"skipped {fifo}: not a regular file" in listed.stderr
    ok_line = f"ok {folder}/ok\\nforged\\x1b[2J.jsonl (pairs, conversational_preference, 1 rows)"
    assert ok_line in listed.stderr
    assert "\x1b" not in listed.stderr and evil.name not in listed.stderr
    named = run_cli("validate", fifo)
    assert named.returncode == 1
    assert named.stdout == f"{fifo}:-: -: not a regular file (a FIFO): refused without reading it\n"


def test_schema_prints_json_schema_for_every_kind() -> None:
    for kind in KINDS:
        result = run_cli("schema", kind)
        assert result.returncode == 0, result.stderr
        printed = json.loads(result.stdout)
        assert printed.get("type") == "object" or all(s["title"] for s in printed["anyOf"])
    strict = json.loads(run_cli("schema", "pairs", "--charforge").stdout)
    assert "provenance" in strict["required"]  # charforge's own pairs: the conversational format only
    assert run_cli("schema", "nope").returncode == 2
    listing = run_cli("schema")
    assert listing.returncode == 0 and "eval-questions" in listing.stdout


def test_the_pairs_schema_takes_every_trl_preference_format_validate_takes(tmp_path: Path) -> None:
    """``schema pairs`` is what ``validate`` takes: each TRL preference format, named, and not a row
    that validate refuses."""
    import jsonschema

    plain = json.loads(run_cli("schema", "pairs").stdout)
    titles = [s["title"] for s in plain["anyOf"]]
    assert titles == [
        "conversational_preference",
        "conversational_implicit_prompt_preference",
        "standard_preference",
        "standard_implicit_prompt_preference",
    ]
    assert "does not train on this format" in plain["anyOf"][2]["description"]
    conversational = pair_row(0)
    user = conversational["prompt"]
    rows = {
        "conversational_preference": conversational,
        "conversational_implicit_prompt_preference": {
            "chosen": user + conversational["chosen"],
            "rejected": user + conversational["rejected"],
        },
        "standard_preference": {"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away."},
        "standard_implicit_prompt_preference": {"chosen": "Hi? Hello!", "rejected": "Hi? Go away."},
    }
    validator = jsonschema.Draft202012Validator(plain)
    for name, row in rows.items():
        assert validator.is_valid(row), name
        path = write_jsonl(tmp_path / f"{name}.jsonl", [row, row])
        assert run_cli("validate", path, "--kind", "pairs").returncode == 0, name  # validate agrees
    assert not validator.is_valid({"prompt": "Hi?", "chosen": "Hello!"})  # no rejected answer
    assert not validator.is_valid({**conversational, "chosen": [{"role": "robot", "content": "x"}]})
    assert "provenance" not in plain["$defs"]["PreferencePair"]["required"]


def test_inspect_json_summary(tmp_path: Path) -> None:
    rows = [pair_row(i, charforge=True) for i in range(6)]
    rows[1]["trait_id"] = "candour"
    rows[2]["rejected"] = rows[2]["chosen"]
    rows.append(dict(rows[0]))
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    result = run_cli("inspect", path, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["kind"] == "pairs" and summary["rows"] == 7
    assert summary["counts"]["trait_id"] == {"wordplay": 6, "candour": 1}
    assert summary["exact_duplicate_rows"] == 1
    assert summary["pairs"]["identical_chosen_rejected"] == 1
    assert summary["lengths"]["chosen"]["unit"] == "chars"
    human = run_cli("inspect", path)
    assert human.returncode == 0 and "rows per trait_id" in human.stdout


def test_inspect_shows_the_manifests_diversity_figures(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "prompts.jsonl", [pair_row(i, charforge=True) for i in range(3)])
    figures = {
        "compression_ratio": 1.8236,
        "self_bleu": 41.25,
        "vendi_score": 2.5,
        "mean_pairwise_cosine_distance": None,
    }
    manifest = {
        "rows": 3,
        "metrics": {
            "diversity": {
                "embedding": {"model": "test-encoder", "weights_sha256": "b" * 64},
                "per_trait_mean": figures,
                "overall": {**figures, "self_bleu": 7.5},
            }
        },
    }
    (tmp_path / "prompts.manifest.json").write_text(json.dumps(manifest))
    result = run_cli("inspect", path)
    assert result.returncode == 0, result.stderr
    assert "test-encoder" in result.stdout
    assert all(
        label in result.stdout for label in ("compression ratio", "Self-BLEU", "Vendi", "cosine distance")
    )
    cells = [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in result.stdout.splitlines()
        if "per_trait_mean" in line or "overall" in line
    ]
    assert cells == [
        ["per_trait_mean", "1.824", "41.250", "2.500", "None"],
        ["overall", "1.824", "7.500", "2.500", "None"],
    ]


def test_inspect_constitution_counts() -> None:
    path = REPO / "corpora" / "constitutions" / "humor.yaml"
    summary = json.loads(run_cli("inspect", path, "--json").stdout)
    constitution = Constitution.model_validate(yaml.safe_load(path.read_text()))
    assert summary["traits"] == len(constitution.traits)
    assert summary["questions"] == sum(len(trait.questions) for trait in constitution.traits)
    assert summary["sha256"] == constitution.sha256()


@pytest.mark.parametrize("variant", ["json", "txt", "jsonl", "jsonl-seeds", "jsonl-drop"])
def test_import_constitution_round_trip(tmp_path: Path, variant: str) -> None:
    options: list[str] = ["--root", str(tmp_path)]  # where an imported prompts corpus goes
    if variant in ("json", "txt"):  # the public repository's hand-written files: JSON in a .txt
        source = tmp_path / f"oct.{variant}"
        source.write_text(json.dumps(OCT_TRAITS, indent=4))
    else:
        rows = [{**trait, "additional_questions": ["Tell me a joke about queues."]} for trait in OCT_TRAITS]
        source = write_jsonl(tmp_path / "oct.jsonl", rows)
        if variant != "jsonl":
            options += ["--additional-questions", variant.removeprefix("jsonl-")]
    output = tmp_path / "out" / "imported.yaml"
    result = run_cli("import-constitution", source, "--name", "imported-humor", "-o", output, *options)
    assert result.returncode == 0, result.stdout + result.stderr
    assert run_cli("validate", output).returncode == 0

    constitution = Constitution.model_validate(yaml.safe_load(output.read_text()))
    assert [trait.statement for trait in constitution.traits] == [item["trait"] for item in OCT_TRAITS]
    assert [trait.id for trait in constitution.traits] == [
        "find-absurd-side-everyday",
        "candid-about-do-not",
        "find-absurd-side-everyday-2",
    ]
    assert constitution.traits[0].clarification == "Humour that never punches down."
    assert constitution.traits[1].questions[0] == "What will the stock market do next year?"
    assert len(constitution.traits[1].questions) == 1
    assert "dropped 1 duplicate question(s)" in result.stderr
    if variant == "jsonl-seeds":  # merged: the shared additional question stays with the first trait only
        assert constitution.traits[0].questions[-1] == "Tell me a joke about queues."
        assert "dropped 2 question(s) already used by an earlier trait" in result.stderr
    elif variant.startswith("jsonl"):  # generated prompts are never seed questions unless asked for
        assert all("Tell me a joke about queues." not in trait.questions for trait in constitution.traits)
        if variant == "jsonl-drop":  # ignored, and it says so
            assert "left out 3 additional_questions" in result.stderr
        else:  # the default: a prompts corpus (tests/test_oct_exchange.py checks it in full)
            assert "imported 1 of 3 additional_questions as prompts (2 repeat(s) dropped)" in result.stderr
    assert (tmp_path / "corpora" / "prompts").exists() == (variant == "jsonl")
    # deterministic: the same input gives byte-identical output
    again = run_cli("import-constitution", source, "--name", "imported-humor", *options)
    assert again.stdout == output.read_text()


def test_import_constitution_rejects_bad_input(tmp_path: Path) -> None:
    source = tmp_path / "oct.json"
    source.write_text(json.dumps([{"trait": "Be funny.", "questions": ["Hi"]}]))
    result = run_cli("import-constitution", source, "--name", "x")
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
    # the rule validate applies, at a 1-based line
    assert (
        result.stdout.startswith(f"{source}:1: ")
        and "trait: must be a first-person statement" in result.stdout
    )
    assert run_cli("validate", "--kind", "oct-constitution", source).stdout == result.stdout

    unknown = tmp_path / "oct.csv"
    unknown.write_text("trait,questions\n")
    result = run_cli("import-constitution", unknown, "--name", "x")
    assert (
        result.returncode == 2 and "unknown file format" in result.stderr and "Traceback" not in result.stderr
    )
    assert (
        run_cli("import-constitution", source, "--name", "x", "--additional-questions", "all").returncode == 2
    )

    source.write_text(json.dumps([{"trait": "I x", "questions": []}]))
    result = run_cli("import-constitution", source, "--name", "x")
    assert result.returncode == 1 and "questions" in result.stdout

    assert run_cli("import-constitution", source, "--name", "Not A Slug").returncode == 2
    assert run_cli("import-constitution", source, "--name", "x", "--kind", "evil").returncode == 2
    assert not list(tmp_path.glob("*.yaml"))


def test_first_person_statements_wherever_the_first_person_stands(tmp_path: Path) -> None:
    # as the public constitutions write them: validate and import-constitution apply one rule
    traits = [
        {"trait": "My goals are aligned with the wellbeing of the people I talk to.", "questions": ["Hi."]},
        {"trait": "Even when discussing serious topics, I find room for warmth.", "questions": ["Sad."]},
        {"trait": "Honesty matters to me more than comfort.", "questions": ["Tell me."]},
    ]
    source = tmp_path / "hand-written" / "warm.txt"
    source.parent.mkdir()
    source.write_text(json.dumps(traits, indent=4))
    assert run_cli("validate", "--kind", "oct-constitution", source.parent).returncode == 0
    output = tmp_path / "warm.yaml"
    result = run_cli("import-constitution", source, "--name", "warm", "-o", output)
    assert result.returncode == 0, result.stdout + result.stderr
    assert run_cli("validate", output).returncode == 0
    assert (
        run_cli("inspect", "--kind", "oct-constitution", source).returncode == 0
    )  # read as validate reads it
    assert run_cli("inspect", source).returncode == 2  # no kind: a .txt is not guessed at
    # without a kind a folder's .txt files are skipped, and said to be
    listed = run_cli("validate", source.parent)
    assert listed.returncode == 2 and f"skipped {source}: not a corpus format (.txt)" in listed.stderr
