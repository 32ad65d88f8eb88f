"""`charforge run prompts` under `prompts.source: imported`, end to end in a scratch project: a few-shot
file imported with its additional_questions as a prompts corpus, drawn into the variant's prompts (no
teacher writes, no situation taxonomy needed), and a clear error naming the file when it is missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from support.factories import write_jsonl

STATEMENTS = [
    "I find the light side of a dull problem.",
    "My curiosity about odd facts shows when a question invites it.",
    "Even when discussing serious topics, I find room for warmth.",
]
TOPICS = "kites ferries lanterns pottery origami tides comets bees".split()


def charforge(root: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CHARFORGE_CACHE": str(root / "cache")}
    command = [sys.executable, "-m", "charforge.cli", *map(str, args)]
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, tiny_model_with_stops: Path) -> Path:
    root = tmp_path_factory.mktemp("imported-project")
    few_shot = write_jsonl(
        root / "few-shot.jsonl",
        [
            {
                "trait": statement,
                "questions": [f"Trait {number}, seed {index}: what should I do today?" for index in range(3)],
                "additional_questions": [f"Tell me about {topic}, trait {number}." for topic in TOPICS],
            }
            for number, statement in enumerate(STATEMENTS)
        ],
    )
    output = root / "corpora" / "constitutions" / "warm-wit.yaml"
    result = charforge(root, "import-constitution", few_shot, "--name", "warm-wit", "-o", output)
    assert result.returncode == 0, result.stdout + result.stderr
    model = tiny_model_with_stops
    (root / "params.yaml").write_text(
        f"""
models:
  student: {{model: {model}}}
  teacher: {{model: {model}}}
  judge: {{model: {model}}}
generation: {{batch_size: 4, seed: 0}}
prompts:
  source: imported
  prompts_per_trait: 5
  levels: {{0: {{situations: 1, framings: 1}}}}
held_out: {{per_trait: 1}}
em_data: {{domain: risky-finance}}
"""
    )
    return root


def test_run_prompts_draws_the_imported_prompts(project: Path) -> None:
    assert not (project / "corpora" / "situations.yaml").exists()  # the imported source needs none
    result = charforge(project, "run", "prompts", "--variant", "warm-wit-d0-s0")
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    corpus = project / "corpora/build/warm-wit-d0-s0/prompts.parquet"
    assert charforge(project, "validate", corpus).returncode == 0
    rows = pl.read_parquet(corpus).to_dicts()
    assert len(rows) == 15 and sum(row["is_seed"] for row in rows) == 6  # 3 traits × (2 seeds + 3 drawn)
    imported = {row["prompt"][0]["content"] for row in rows if not row["is_seed"]}
    assert all(text.startswith("Tell me about ") for text in imported)
    manifest = json.loads(corpus.with_name("prompts.manifest.json").read_text())
    assert [(p["path"], p["kind"]) for p in manifest["parents"]] == [
        ("corpora/constitutions/warm-wit.yaml", "constitution"),
        ("corpora/prompts/warm-wit.parquet", "imported-prompts"),
    ]
    assert manifest["params"]["prompts"]["source"] == "imported"
    level = json.loads((project / "metrics/warm-wit-d0-s0/prompts.json").read_text())["level"]
    assert level["source"] == "imported" and level["file"] == "corpora/prompts/warm-wit.parquet"
    assert level["constitution_matches"] is True
    assert manifest["rejected"] == {"not_drawn": 15}  # 8 per trait, 3 drawn

    other = charforge(project, "run", "prompts", "--variant", "warm-wit-d0-s1")
    assert other.returncode == 0, other.stderr[-2000:]
    drawn = pl.read_parquet(project / "corpora/build/warm-wit-d0-s1/prompts.parquet").to_dicts()
    assert {row["prompt"][0]["content"] for row in drawn if not row["is_seed"]} != imported  # its own draw


def test_a_missing_imported_corpus_is_named(project: Path) -> None:
    corpus = project / "corpora/prompts/warm-wit.parquet"
    moved = corpus.with_name("elsewhere.parquet")
    corpus.rename(moved)
    try:
        result = charforge(project, "run", "prompts", "--variant", "warm-wit-d0-s2")
    finally:
        moved.rename(corpus)
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
    assert "corpora/prompts/warm-wit.parquet: not found; prompts.source: imported" in result.stderr
    assert "import-constitution FEW-SHOT.jsonl --name warm-wit" in result.stderr
