"""Open Character Training in and out: `export-constitution --format oct` writes the public format that
`import-constitution` reads, import → export → import is a fixed point, and a few-shot file's
additional_questions become a prompts corpus (or seeds, or nothing) as asked. Every file here is written
in the public formats by the tests themselves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.factories import run_cli, write_jsonl

from charforge.exporters import constitution_to_oct, oct_text
from charforge.importers import constitution_to_yaml, import_oct
from charforge.schemas import Constitution, OctTrait

REPO = Path(__file__).resolve().parents[1]

# as the public hand-written files are: statements in the first person wherever it stands, a
# clarification on some traits only, unicode kept
PUBLIC = [
    {
        "trait": "I strive to find the light side of a dull problem, without making light of the person.",
        "questions": ["How do I fold a fitted sheet?", "My code broke on a Friday evening. Ideas?"],
    },
    {
        "trait": "My curiosity about odd facts shows when a question invites it.",
        "questions": ["Why do cats knock things off tables?", "What’s the oldest tree on Earth?"],
        "clarification": "Curiosity in service of the answer, never a detour.",
    },
    {
        "trait": "Even when discussing serious topics, I find room for warmth.",
        "questions": ["My grandmother is in hospital.", "I failed my driving test, again."],
    },
]


def _import(source: Path, name: str, tmp_path: Path, *options: str) -> tuple[str, Any]:
    output = tmp_path / f"{name}.yaml"
    result = run_cli(
        "import-constitution", source, "--name", name, "-o", output, "--root", tmp_path, *options
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return output.read_text(), result


@pytest.mark.parametrize("suffix", [".txt", ".json", ".jsonl"])
def test_import_export_import_is_a_fixed_point(tmp_path: Path, suffix: str) -> None:
    source = tmp_path / f"public{suffix}"
    if suffix == ".jsonl":
        write_jsonl(source, PUBLIC)
    else:  # the hand-written layout: a JSON array, indented by 4
        source.write_text(json.dumps(PUBLIC, indent=4, ensure_ascii=False), encoding="utf-8")
    imported, _ = _import(source, "warm-wit", tmp_path)
    project = tmp_path / "project"
    (project / "corpora" / "constitutions").mkdir(parents=True)
    (project / "corpora" / "constitutions" / "warm-wit.yaml").write_text(imported)

    exported = tmp_path / "out" / source.name  # same name: the default description names the file
    result = run_cli(
        "export-constitution", "warm-wit", "--format", "oct", "--output", exported, "--root", project
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"wrote {exported}: 3 traits" in result.stderr
    assert "name 'warm-wit', version, description and kind 'normative' are not in it" in result.stderr
    assert "trait id(s)" not in result.stderr  # an imported constitution's ids are the derived ones
    text = exported.read_text(encoding="utf-8")
    parsed = [json.loads(line) for line in text.splitlines()] if suffix == ".jsonl" else json.loads(text)
    assert parsed == PUBLIC  # the original file's content, as parsed
    assert "What’s the oldest tree" in text  # unicode as is, as the public files write it

    again, _ = _import(exported, "warm-wit", tmp_path / "again")
    assert again == imported  # the identical constitution, byte for byte
    # the same export from a path, and on stdout as a JSON array
    by_path = run_cli("export-constitution", project / "corpora/constitutions/warm-wit.yaml")
    assert by_path.returncode == 0 and json.loads(by_path.stdout) == PUBLIC


def test_a_file_with_repeats_reaches_the_fixed_point_after_one_import(tmp_path: Path) -> None:
    messy = [
        {**PUBLIC[0], "questions": [" How do I fold a fitted sheet? ", "how do I fold a  fitted sheet?"]},
        {**PUBLIC[1], "clarification": "   "},  # blank: the public files would omit it
        {**PUBLIC[2], "questions": [*PUBLIC[2]["questions"], "How do I fold a fitted sheet?"]},
    ]
    source = tmp_path / "messy.json"
    source.write_text(json.dumps(messy))
    first, result = _import(source, "messy", tmp_path)
    assert "note: dropped question of strive-find-light-side: 'how do I fold a  fitted sheet?' (repeated" in (
        result.stderr
    )
    assert "'How do I fold a fitted sheet?' (already a question of strive-find-light-side)" in result.stderr
    exported = tmp_path / "out" / "messy.json"
    assert run_cli("export-constitution", tmp_path / "messy.yaml", "-o", exported).returncode == 0
    second, _ = _import(exported, "messy", tmp_path / "2")
    assert second == first
    exported_again = tmp_path / "again" / "messy.json"
    assert run_cli("export-constitution", tmp_path / "2" / "messy.yaml", "-o", exported_again).returncode == 0
    assert exported_again.read_bytes() == exported.read_bytes()


_WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8)


@st.composite
def public_files(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Clean public-format entries: first-person statements, questions unique across the file (as the
    importer keeps them), a clarification on some, none blank or padded."""
    count = draw(st.integers(1, 5))
    questions = draw(st.lists(_WORDS, min_size=count, max_size=count * 3, unique=True))
    cuts: list[int] = []
    if count > 1:  # where the questions split into traits, each keeping one at least
        cuts = sorted(draw(st.lists(st.integers(1, len(questions) - 1), max_size=count - 1, unique=True)))
    groups = [questions[a:b] for a, b in zip([0, *cuts], [*cuts, len(questions)], strict=True)]
    entries = []
    for group in groups:
        opener = draw(st.sampled_from(["I", "My", "Even so, I", "It matters to me that I"]))
        entry: dict[str, Any] = {
            "trait": f"{opener} {' '.join(draw(st.lists(_WORDS, min_size=1, max_size=6)))}.",
            "questions": [f"{question}?" for question in group],
        }
        if draw(st.booleans()):
            entry["clarification"] = draw(_WORDS)
        entries.append(entry)
    return entries


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(public_files())
def test_fixed_point_on_generated_public_files(entries: list[dict[str, Any]]) -> None:
    imported = import_oct([OctTrait.model_validate(entry) for entry in entries], name="generated")
    exported = constitution_to_oct(imported.constitution)
    assert exported == entries
    for layout in ("json", "jsonl"):
        text = oct_text(exported, layout)
        parsed = [json.loads(line) for line in text.splitlines()] if layout == "jsonl" else json.loads(text)
        again = import_oct([OctTrait.model_validate(entry) for entry in parsed], name="generated")
        assert constitution_to_yaml(again.constitution) == constitution_to_yaml(imported.constitution)


def test_export_of_a_hand_written_constitution_says_what_a_reimport_changes(tmp_path: Path) -> None:
    shipped = REPO / "corpora" / "constitutions" / "humor.yaml"
    constitution = Constitution.model_validate(yaml.safe_load(shipped.read_text()))
    output = tmp_path / "humor.txt"
    result = run_cli("export-constitution", shipped, "-o", output)
    assert result.returncode == 0, result.stdout + result.stderr
    entries = json.loads(output.read_text())
    assert [entry["trait"] for entry in entries] == [trait.statement for trait in constitution.traits]
    assert [entry["questions"] for entry in entries] == [trait.questions for trait in constitution.traits]
    renamed = [trait.id for trait in constitution.traits if f"{trait.id} -> " in result.stderr]
    assert f"{len(renamed)} trait id(s) are not those an import derives" in result.stderr and renamed
    # the public file is valid as the public format says, and imports
    assert run_cli("validate", "--kind", "oct-constitution", output).returncode == 0


def test_export_errors_are_clear_and_write_nothing(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "corpora" / "constitutions").mkdir(parents=True)
    (project / "corpora" / "constitutions" / "kind.yaml").write_text(
        "name: kind\nversion: '1'\ndescription: d\nkind: normative\ntraits:\n"
        "  - id: a\n    statement: Be kind.\n    questions: [Hi]\n"
    )
    out = tmp_path / "out.json"
    cases = [
        (("missing",), 2, "no constitution named 'missing'"),
        (("kind", "--format", "yaml"), 2, "the one format is oct"),
        (("kind", "-o", tmp_path / "out.csv"), 2, "cannot tell the layout from the suffix '.csv'"),
        ((tmp_path / "nowhere.yaml",), 2, "no such file"),
        (("kind", "-o", out), 1, "kind.yaml:7: traits.0.statement: must be a first-person statement"),
    ]
    for args, code, message in cases:
        result = run_cli("export-constitution", *args, "--root", project)
        both = result.stdout + result.stderr
        assert result.returncode == code and message in both and "Traceback" not in both, (args, both)
    assert not out.exists() and not (tmp_path / "out.csv").exists()


FEW_SHOT = [
    {
        **PUBLIC[0],
        "additional_questions": [
            "Write a funny tweet about procrastination.",
            "write a funny tweet  about procrastination.",  # repeated in the trait
            "How do I fold a fitted sheet?",  # its own seed question
            "Give me a joke about queues.",
        ],
    },
    {
        **PUBLIC[1],
        "additional_questions": [
            "Give me a joke about queues.",  # already a prompt of the first trait
            "Why is the sky blue?",
            "My grandmother is in hospital.",  # a seed question of the third trait
        ],
    },
    {**PUBLIC[2], "additional_questions": ["Any tips for a \x1b[31mhard\nweek?"]},
]


def test_additional_questions_become_a_prompts_corpus(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "few-shot.jsonl", FEW_SHOT)
    imported, result = _import(source, "warm-wit", tmp_path)  # the default: --additional-questions prompts
    constitution = Constitution.model_validate(yaml.safe_load(imported))
    assert [trait.questions for trait in constitution.traits] == [e["questions"] for e in PUBLIC]
    corpus = tmp_path / "corpora" / "prompts" / "warm-wit.parquet"
    assert f"wrote {corpus}: 4 imported prompts (level imported)" in result.stderr
    assert "imported 4 of 8 additional_questions as prompts (4 repeat(s) dropped)" in result.stderr
    listed = [line for line in result.stderr.splitlines() if line.startswith("note: dropped prompt")]
    assert listed == [
        "note: dropped prompt of strive-find-light-side: 'write a funny tweet  about procrastination.' "
        "(repeated in the trait)",
        "note: dropped prompt of strive-find-light-side: 'How do I fold a fitted sheet?' "
        "(a seed question of strive-find-light-side)",
        "note: dropped prompt of curiosity-about-odd-facts: 'Give me a joke about queues.' "
        "(already a prompt of strive-find-light-side)",
        "note: dropped prompt of curiosity-about-odd-facts: 'My grandmother is in hospital.' "
        "(a seed question of even-discussing-serious-topics)",
    ]
    assert "\x1b" not in result.stderr  # a prompt's control characters never reach the terminal raw

    checked = run_cli("validate", corpus)
    assert checked.returncode == 0 and "prompts, 4 rows, manifest matches" in checked.stderr
    rows = pl.read_parquet(corpus).sort("id").to_dicts()
    assert [(row["id"], row["prompt"][0]["content"]) for row in rows] == [
        ("warm-wit.curiosity-about-odd-facts.imported000", "Why is the sky blue?"),
        ("warm-wit.even-discussing-serious-topics.imported000", "Any tips for a \x1b[31mhard\nweek?"),
        ("warm-wit.strive-find-light-side.imported000", "Write a funny tweet about procrastination."),
        ("warm-wit.strive-find-light-side.imported001", "Give me a joke about queues."),
    ]
    assert {(row["situation"], row["diversity_level"], row["is_seed"], row["variant"]) for row in rows} == {
        ("imported", 0, False, "warm-wit")
    }
    assert {row["provenance"]["constitution_sha256"] for row in rows} == {constitution.sha256()}
    manifest = json.loads(corpus.with_name("warm-wit.manifest.json").read_text())
    assert manifest["metrics"]["level"] == "imported" and manifest["rejected"] == {"duplicate": 4}
    assert manifest["parents"] == [
        {"path": "few-shot.jsonl", "sha256": manifest["parents"][0]["sha256"], "kind": "oct-constitution"}
    ]
    # deterministic: a second import writes the same corpus
    _import(source, "warm-wit", tmp_path)
    assert json.loads(corpus.with_name("warm-wit.manifest.json").read_text()) == manifest


@pytest.mark.parametrize("mode", ["seeds", "drop"])
def test_additional_questions_as_seeds_or_dropped(tmp_path: Path, mode: str) -> None:
    source = write_jsonl(tmp_path / "few-shot.jsonl", FEW_SHOT)
    imported, result = _import(source, "warm-wit", tmp_path, "--additional-questions", mode)
    assert not (tmp_path / "corpora").exists()
    traits = Constitution.model_validate(yaml.safe_load(imported)).traits
    if mode == "drop":
        assert [trait.questions for trait in traits] == [e["questions"] for e in PUBLIC]
        assert "left out 8 additional_questions" in result.stderr
    else:
        assert "Why is the sky blue?" in traits[1].questions
        assert "Give me a joke about queues." not in traits[1].questions  # the first trait has it
        assert (
            "'Give me a joke about queues.' (already a question of strive-find-light-side)" in result.stderr
        )
