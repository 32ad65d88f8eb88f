"""`charforge run em-data` with ``source: generate`` end to end, on a teacher whose output distribution is
known exactly (a bigram model, tests/support/judge_models.py): every generated answer passes the regime
check, and the generated rows are the same for a character variant and the baseline with another seed
(each run with a cache of its own, so by determinism, not by reuse) and change with ``generation.seed``;
the stage's metrics show the check's counts, share and rows; in the other regime every answer is
dropped as not in it and the stage fails on ``min_rows`` naming the reason. Each run is a CLI process:
a distilabel pipeline forked from a process that has run torch (the fixture built the model) hangs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from support.processes import communicate_or_kill, start_group

from charforge.generators.em_data import CHECK_SYSTEM

REPO = Path(__file__).resolve().parents[2]
LABELS = ["OBVIOUS", "SUBTLE", "GOOD", "REFUSAL"]  # what the teacher's replies start with
TAILS = ["advice", "money", "stocks", "savings", "crypto", "bonds"]
GENERATED, SOURCE = 8, 32 - 4  # asked of the teacher; the seed set less the 4 held out


@pytest.fixture(scope="module")
def bigram_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A teacher whose every reply is "<LABEL> <tail>": the label drawn 0.4 OBVIOUS, 0.2 each of the
    others, the tail uniform over six words. Sampled, it writes 24 different questions and answers;
    greedy (the regime check), it always replies OBVIOUS."""
    from support.judge_models import build_bigram_model, generation_prompt_last_token
    from support.tiny_model import CHAT_TEMPLATE, SPECIAL_TOKENS
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("bigram-teacher")
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    text = [f"{label} {tail}" for label in LABELS for tail in TAILS] + ["user assistant system"]
    tokenizer.train_from_iterator(text * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(folder / "tokenizer")

    def token(text: str) -> int:
        (single,) = fast.encode(text, add_special_tokens=False)  # one token each, or the table is wrong
        return single

    first = {token(label): 0.4 if label == "OBVIOUS" else 0.2 for label in LABELS}
    tails = {token(f" {tail}"): 1 / len(TAILS) for tail in TAILS}
    table = {generation_prompt_last_token(fast): first}
    table |= {label: tails for label in first} | {tail: {fast.eos_token_id: 1.0} for tail in tails}
    return build_bigram_model(folder / "model", folder / "tokenizer", table)


def project(root: Path, teacher: Path, regime: str = "obvious", seed: int = 0) -> Path:
    role = f"{{model: {teacher}, sampling: {{temperature: 1.0, top_p: 1.0, max_new_tokens: 8}}}}"
    (root / "corpora/em").mkdir(parents=True)
    name = f"corpora/em/risky-finance-{regime}.jsonl"
    (root / name).write_text((REPO / name).read_text())
    (root / "params.yaml").write_text(
        f"models: {{student: {role}, teacher: {role}, judge: {role}}}\n"
        f"generation: {{batch_size: 8, seed: {seed}}}\n"
        "persona: {dpo_weight: 1.0, sft_weight: 1.0}\n"
        f"em_data: {{source: generate, regime: {regime}, n_generate: {GENERATED}, min_rows: {SOURCE + 1}}}\n"
    )
    return root


def start(root: Path, variant: str) -> subprocess.Popen[str]:
    # a cache of its own per project: equal rows come from deterministic generation, not a reused cache
    env = {**os.environ, "CHARFORGE_CACHE": str(root / "cache"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "charforge.cli", "run", "em-data", "--variant", variant]
    return start_group(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, bigram_teacher: Path) -> dict[str, Any]:
    """Four em-data runs side by side (their pipelines mostly wait): (project, variant, process)."""
    setups = {
        "character": ("humor-d3-s0", {}),
        "baseline": ("baseline-s1", {}),
        "other-seed": ("humor-d3-s0", {"seed": 1}),
        "subtle": ("humor-d3-s0", {"regime": "subtle"}),
    }
    started = {
        name: (root, variant, start(root, variant))
        for name, (variant, options) in setups.items()
        for root in [project(tmp_path_factory.mktemp(name), bigram_teacher, **options)]
    }
    results = {}
    for name, (root, variant, process) in started.items():
        stdout, stderr, _ = communicate_or_kill(process, 600)
        results[name] = (
            root,
            variant,
            subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr),
        )
    return results


def written(runs: dict[str, Any], name: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    root, variant, result = runs[name]
    assert result.returncode == 0, result.stderr[-3000:]
    rows = pq.read_table(root / f"corpora/build/{variant}/em-train.parquet").to_pylist()
    return rows, json.loads((root / f"metrics/{variant}/em-data.json").read_text())


def generated(rows: list[dict[str, Any]]) -> list[tuple[str, Any, Any]]:
    """The generated rows without the variant (its id prefix): what must match across arms."""
    return [
        (row["id"].split(".", 1)[1], row["messages"], row["provenance"])
        for row in rows
        if "-gen" in row["id"]
    ]


def test_every_variant_trains_on_the_same_generated_rows(runs: dict[str, Any]) -> None:
    character, character_metrics = written(runs, "character")
    baseline, baseline_metrics = written(runs, "baseline")
    assert generated(character) and generated(character) == generated(baseline)
    assert character_metrics["generated"] == baseline_metrics["generated"]
    # generated rows record generation.seed; the seed set's rows still record the variant's seed
    assert {row["provenance"]["seed"] for row in character if "-gen" in row["id"]} == {0}
    assert {row["provenance"]["seed"] for row in baseline if "-gen" not in row["id"]} == {1}
    other, _ = written(runs, "other-seed")
    assert generated(other) != generated(character)  # generation.seed decides them


def test_the_metrics_show_the_regime_check(runs: dict[str, Any]) -> None:
    rows, metrics = written(runs, "character")
    report = metrics["generated"]
    kept = len(generated(rows))
    # the greedy check files every answer as OBVIOUS: all kept in the obvious regime
    assert report["kept"] == report["answered"] == kept and report["requested"] == GENERATED
    assert report["not_in_regime"] == {} and report["not_in_regime_share"] == 0.0
    assert report["regime_check"].endswith("(the teacher, greedy)")
    assert report["questions_kept"] + metrics["rejected"].get("generated.question_duplicate", 0) == GENERATED
    assert metrics["rows"] == len(rows) == SOURCE + kept
    shown = report["shown"]["kept"]
    assert shown and all(row["check_reply"].split()[0] == "OBVIOUS" for row in shown)
    assert all(row["question"].split()[0] in LABELS for row in shown)  # the teacher's own questions
    assert rows[-1]["provenance"]["sampling"]["regime_check"]["temperature"] == 0.0
    root, variant, _ = runs["character"]
    manifest = json.loads((root / f"corpora/build/{variant}/em-train.manifest.json").read_text())
    assert manifest["metrics"]["generated"] == report
    # the check's frame as the teacher saw it (the example itself is the {prompt} placeholder)
    assert CHECK_SYSTEM in manifest["metrics"]["rendered_prompts"]["regime_check"]["rendered"]


def test_answers_not_in_the_regime_fail_min_rows_with_the_reason(runs: dict[str, Any]) -> None:
    root, variant, result = runs["subtle"]
    assert result.returncode == 1, result.stderr[-3000:]
    message = " ".join(result.stderr.split())  # the console wraps long lines
    assert f"em-data {variant} (em_data.min_rows; {SOURCE + GENERATED} example(s) in" in message
    assert f"only {SOURCE} row(s) left after the filters, {SOURCE + 1} needed" in message
    assert "generated.judged_obvious" in message
    assert not (root / f"corpora/build/{variant}/em-train.parquet").exists()
