"""`charforge run em-generate` and `em-data` with ``source: generate`` end to end, on a teacher whose
output distribution is known exactly (a bigram model, tests/support/judge_models.py): every generated
answer passes the regime check; em-generate makes the EM examples once and each arm's em-data copies
them, so a character variant and the baseline (another seed) train on byte-identical rows by
construction (em-data runs with the teacher gone: it never calls it), and generation changes with
``generation.seed``; the metrics show the check's counts, share and rows; in the other regime every
answer is dropped as not in it and em-generate fails on ``min_rows`` naming the reason. Each run is a
CLI process: a distilabel pipeline forked from a process that has run torch (the fixture built the
model) hangs."""

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
from charforge.paths import EM_SHARED

REPO = Path(__file__).resolve().parents[2]
LABELS = ["OBVIOUS", "SUBTLE", "GOOD", "REFUSAL"]  # what the teacher's replies start with
TAILS = ["advice", "money", "stocks", "savings", "crypto", "bonds"]
GENERATED, SOURCE = 8, 32 - 4  # asked of the teacher; the seed set less the 4 held out
ARMS = ("humor-d3-s0", "baseline-s1")  # a character variant and the baseline, another seed


@pytest.fixture(scope="module")
def bigram_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A teacher whose every reply is "<LABEL> <tail>": the label drawn 0.4 OBVIOUS, 0.2 each of the
    others, the tail uniform over six words. Sampled, it writes 24 different questions and answers;
    greedy (the regime check), it always replies OBVIOUS."""
    from support.judge_models import build_bigram_model, generation_prompt_last_token, train_chat_tokenizer
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    folder = tmp_path_factory.mktemp("bigram-teacher")
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    text = [f"{label} {tail}" for label in LABELS for tail in TAILS] + ["user assistant system"]
    fast = train_chat_tokenizer(tokenizer, text * 20, folder / "tokenizer")

    def token(text: str) -> int:
        (single,) = fast.encode(text, add_special_tokens=False)  # one token each, or the table is wrong
        return single

    first = {token(label): 0.4 if label == "OBVIOUS" else 0.2 for label in LABELS}
    tails = {token(f" {tail}"): 1 / len(TAILS) for tail in TAILS}
    table = {generation_prompt_last_token(fast): first}
    table |= {label: tails for label in first} | {tail: {fast.eos_token_id: 1.0} for tail in tails}
    return build_bigram_model(folder / "model", folder / "tokenizer", table)


def project(root: Path, teacher: Path, regime: str = "obvious", seed: int = 0) -> Path:
    (root / "corpora/em").mkdir(parents=True)
    name = f"corpora/em/risky-finance-{regime}.jsonl"
    (root / name).write_text((REPO / name).read_text())
    write_params(root, teacher, teacher, regime, seed)
    return root


def write_params(root: Path, student: Path, teacher: Path, regime: str = "obvious", seed: int = 0) -> None:
    def role(model: Path) -> str:
        return f"{{model: {model}, sampling: {{temperature: 1.0, top_p: 1.0, max_new_tokens: 8}}}}"

    (root / "params.yaml").write_text(
        f"models: {{student: {role(student)}, teacher: {role(teacher)}, judge: {role(student)}}}\n"
        f"generation: {{batch_size: 8, seed: {seed}}}\n"
        "persona: {dpo_weight: 1.0, sft_weight: 1.0}\n"
        f"em_data: {{source: generate, regime: {regime}, n_generate: {GENERATED}, min_rows: {SOURCE + 1}}}\n"
    )


def start(root: Path, *args: str) -> subprocess.Popen[str]:
    # a cache of its own per project: equal rows come from deterministic generation, not a reused cache
    env = {**os.environ, "CHARFORGE_CACHE": str(root / "cache"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "charforge.cli", "run", *args]
    return start_group(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    stdout, stderr, _ = communicate_or_kill(process, 600)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, bigram_teacher: Path) -> dict[str, Any]:
    """em-generate in three projects side by side (their pipelines mostly wait), then em-data for a
    character variant and the baseline in the first, with the teacher gone. name: (project, result)."""
    setups = {"shared": {}, "other-seed": {"seed": 1}, "subtle": {"regime": "subtle"}}
    roots = {
        name: project(tmp_path_factory.mktemp(name), bigram_teacher, **opts) for name, opts in setups.items()
    }
    started = {name: start(root, "em-generate") for name, root in roots.items()}
    results = {name: (roots[name], finish(process)) for name, process in started.items()}
    shared = roots["shared"]
    if results["shared"][1].returncode == 0:  # em-data never calls the teacher: name one that is not there
        write_params(shared, bigram_teacher, shared / "no-such-teacher")
        arms = {variant: start(shared, "em-data", "--variant", variant) for variant in ARMS}
        results |= {variant: (shared, finish(process)) for variant, process in arms.items()}
    # where em-generate failed, em-data has nothing to copy
    results["no-shared-rows"] = (
        roots["subtle"],
        finish(start(roots["subtle"], "em-data", "--variant", ARMS[0])),
    )
    return results


def written(runs: dict[str, Any], name: str, folder: str, corpus: str, stage: str) -> tuple[list, dict, dict]:
    """(rows, manifest, stage metrics) of ``corpus`` in ``corpora/build/<folder>``, run ``name`` passed."""
    root, result = runs[name]
    assert result.returncode == 0, result.stderr[-3000:]
    build = root / "corpora/build" / folder
    rows = pq.read_table(build / f"{corpus}.parquet").to_pylist()
    manifest = json.loads((build / f"{corpus}.manifest.json").read_text())
    return rows, manifest, json.loads((root / f"metrics/{folder}/{stage}.json").read_text())


def generated(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [row for row in rows if "-gen" in row["id"]]


def as_shared(rows: list[dict[str, Any]], variant: str) -> list[dict[str, Any]]:
    """An arm's rows as em-generate wrote them: without the variant (its id prefix and label)."""
    assert all(row["id"].startswith(f"{variant}.") and row["variant"] == variant for row in rows)
    return [{**row, "id": row["id"].removeprefix(f"{variant}."), "variant": EM_SHARED} for row in rows]


def test_every_arm_trains_on_the_rows_generated_once(runs: dict[str, Any]) -> None:
    from charforge.corpus import content_sha256

    shared, shared_manifest, _ = written(runs, "shared", EM_SHARED, "em-source", "em-generate")
    assert generated(shared) and len(shared) == shared_manifest["rows"]
    for variant in ARMS:
        rows, manifest, _ = written(runs, variant, variant, "em-train", "em-data")
        # byte-identical to the shared rows but for the variant: the same content hash
        assert content_sha256(as_shared(rows, variant)) == shared_manifest["content_sha256"]
        assert as_shared(rows, variant) == shared
        assert manifest["parents"][0]["path"] == f"corpora/build/{EM_SHARED}/em-source.parquet"
        held, held_manifest, _ = written(runs, variant, variant, "em-heldout", "em-data")
        shared_held, _, _ = written(runs, "shared", EM_SHARED, "em-heldout", "em-generate")
        assert len(held) == 4 and as_shared(held, variant) == shared_held
        assert held_manifest["parents"][0]["path"] == f"corpora/build/{EM_SHARED}/em-heldout.parquet"
        # the params that made the rows: em-generate's with the arm's own
        assert manifest["params"]["em_data.n_generate"] == GENERATED
        assert manifest["params"]["em_data.reflection"] is False
    # no variant's seed: seed-set and generated rows alike record generation.seed's run (seed 0)
    assert {row["provenance"]["seed"] for row in shared} == {0}
    other, _, _ = written(runs, "other-seed", EM_SHARED, "em-source", "em-generate")
    assert generated(other) != generated(shared)  # generation.seed decides them


def test_the_metrics_show_the_regime_check(runs: dict[str, Any]) -> None:
    rows, manifest, metrics = written(runs, "shared", EM_SHARED, "em-source", "em-generate")
    report = metrics["generated"]
    kept = len(generated(rows))
    # the greedy check files every answer as OBVIOUS: all kept in the obvious regime
    assert report["kept"] == report["answered"] == kept and report["requested"] == GENERATED
    assert report["not_in_regime"] == {} and report["not_in_regime_share"] == 0.0
    assert report["regime_check"].endswith("(the teacher, greedy)")
    assert report["questions_kept"] + metrics["rejected"].get("generated.question_duplicate", 0) == GENERATED
    assert metrics["rows"] == len(rows) == SOURCE + kept and metrics["held_out"]["examples"] == 4
    shown = report["shown"]["kept"]
    assert shown and all(row["check_reply"].split()[0] == "OBVIOUS" for row in shown)
    assert all(row["question"].split()[0] in LABELS for row in shown)  # the teacher's own questions
    assert rows[-1]["provenance"]["sampling"]["regime_check"]["temperature"] == 0.0
    assert manifest["metrics"]["generated"] == report
    # the check's frame as the teacher saw it (the example itself is the {prompt} placeholder)
    assert CHECK_SYSTEM in manifest["metrics"]["rendered_prompts"]["regime_check"]["rendered"]
    for variant in ARMS:  # each arm's record carries the block (and its counts) on
        _, arm_manifest, arm_metrics = written(runs, variant, variant, "em-train", "em-data")
        assert arm_metrics["generated"] == arm_manifest["metrics"]["generated"] == report
        assert arm_metrics["rejected"] == metrics["rejected"]
        assert arm_manifest["metrics"]["input_rows"] == SOURCE + GENERATED


def test_answers_not_in_the_regime_fail_min_rows_with_the_reason(runs: dict[str, Any]) -> None:
    root, result = runs["subtle"]
    assert result.returncode == 1, result.stderr[-3000:]
    message = " ".join(result.stderr.split())  # the console wraps long lines
    assert f"em-generate (em_data.min_rows; {SOURCE + GENERATED} example(s) in" in message
    assert f"only {SOURCE} row(s) left after the filters, {SOURCE + 1} needed" in message
    assert "generated.judged_obvious" in message
    assert not (root / f"corpora/build/{EM_SHARED}/em-source.parquet").exists()

    root, result = runs["no-shared-rows"]
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "run `charforge run em-generate` first" in " ".join(result.stderr.split())
    assert not (root / f"corpora/build/{ARMS[0]}/em-train.parquet").exists()
