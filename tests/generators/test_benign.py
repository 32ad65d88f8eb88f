"""Benign prompt files in the formats their authors publish, and their errors (issue 24)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from charforge.generators.benign import BenignPromptsError, load_benign_prompts
from charforge.schemas.params import BenignConfig

REPO = Path(__file__).resolve().parents[2]


def test_the_shipped_prompts_are_distinct_and_stay_off_the_em_domains() -> None:
    prompts, repeated = load_benign_prompts(REPO / "corpora/benign/prompts.yaml")
    assert len(prompts) == 40 == len(set(prompts)) and repeated == 0
    text = " ".join(prompts).lower()
    for word in ("invest", "stock", "money", "medic", "doctor", "code", "password", "weapon"):
        assert word not in text, word


def test_alpaca_json_joins_instruction_and_input(tmp_path: Path) -> None:
    path = tmp_path / "alpaca_data.json"
    rows = [
        {"instruction": "Give three tips for staying healthy.", "input": "", "output": "1. Eat well."},
        {"instruction": "Translate the sentence.", "input": "Bonjour", "output": "Hello"},
    ]
    path.write_text(json.dumps(rows))
    assert load_benign_prompts(path) == (
        [
            "Give three tips for staying healthy.",
            "Translate the sentence.\n\nBonjour",
        ],
        0,
    )
    parquet = tmp_path / "alpaca.parquet"
    pl.DataFrame(rows).write_parquet(parquet)  # the Hub's copy
    assert load_benign_prompts(parquet) == load_benign_prompts(path)


def test_chat_rows_give_their_first_user_turn_and_repeats_are_asked_once(tmp_path: Path) -> None:
    path = tmp_path / "chats.jsonl"
    lines = [
        {"messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi there"}]},
        {"conversations": [{"from": "human", "value": "Name a river."}, {"from": "gpt", "value": "Nile"}]},
        {"prompt": "Hi  there"},
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    assert load_benign_prompts(path) == (["Hi there", "Name a river."], 1)  # the repeat is counted


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("p.yaml", "prompts:\n  - ok\n  - {answer: 3}\n", r"p\.yaml:3: prompts\.1: no prompt"),
        ("p.jsonl", '{"prompt": "a"}\n{"prompt": "  "}\n', r"p\.jsonl:2: the prompt is empty"),
        ("p.json", '{"prompt": "a"}', "expected YAML"),
        ("p.jsonl", '{"messages": [{"role": "assistant", "content": "x"}]}\n', "no user turn"),
        ("p.yaml", "prompts: []\n", "no prompts"),
    ],
)
def test_a_bad_file_is_named_with_its_line(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(BenignPromptsError, match=message):
        load_benign_prompts(path)


def test_the_shipped_file_validates_as_its_kind_and_a_repeat_is_refused(tmp_path: Path) -> None:
    from support.factories import run_cli

    result = run_cli("validate", REPO / "corpora/benign/prompts.yaml")
    assert result.returncode == 0 and "(benign-prompts)" in result.stderr, result.stdout + result.stderr
    repeated = tmp_path / "prompts.yaml"
    repeated.write_text("prompts:\n  - Name a river.\n  - Name  a river.\n")
    result = run_cli("validate", repeated)
    assert result.returncode == 1 and "listed more than once" in result.stdout + result.stderr


def test_the_prompt_file_must_live_where_dvc_tracks_it() -> None:
    BenignConfig(prompts="corpora/benign/alpaca_data.json")
    for path in ("/data/alpaca.json", "corpora/benign/../em/x.jsonl", "corpora/benign"):
        with pytest.raises(ValueError, match="inside corpora/benign/"):
            BenignConfig(prompts=path)
