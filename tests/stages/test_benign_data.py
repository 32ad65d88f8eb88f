"""Stage `benign-data` (issue 24): the student's answers to the benign prompts, once for the grid; written
empty, with the reason, when no defence trains on them; a shortfall for interleave fails here, with the
counts. Each run is a fresh process (a distilabel pipeline forks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from support.processes import communicate_or_kill, start_group

PROMPTS = [f"Describe a calm morning walk number {index}." for index in range(6)]


def charforge(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CHARFORGE_CACHE": str(root / "cache"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "charforge.cli", *args]
    process = start_group(
        command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    stdout, stderr, _ = communicate_or_kill(process, 600)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def project(root: Path, model: Path, defences: str, rows: int = 24) -> Path:
    (root / "corpora/benign").mkdir(parents=True, exist_ok=True)
    (root / "corpora/benign/prompts.yaml").write_text("prompts:\n" + "".join(f"  - {p}\n" for p in PROMPTS))
    role = f"{{model: {model}, sampling: {{temperature: 1.0, max_new_tokens: 24}}}}"
    (root / "params.yaml").write_text(
        f"models: {{student: {role}, teacher: {role}, judge: {role}}}\n"
        "generation: {batch_size: 16, seed: 0}\n"
        f"grid: {{baselines: [baseline-s0], defences: {defences}, defended: {{baselines: [baseline-s0]}}}}\n"
        "defences: {benign: {samples_per_prompt: 2, trim_cut_off: true}, interleave: {fraction: 0.2}}\n"
        f"em_data: {{rows: {rows}, min_rows: 1}}\n"
    )
    return root


def test_benign_rows_are_the_students_answers_counted(tmp_path: Path, trained_tiny_model: Path) -> None:
    root = project(tmp_path, trained_tiny_model, "[kl, interleave]")
    result = charforge(root, "run", "benign-data")
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((root / "corpora/build/em/benign.manifest.json").read_text())
    rows = pq.read_table(root / "corpora/build/em/benign.parquet").to_pylist()
    assert manifest["rows"] == len(rows) and manifest["rows"] + sum(manifest["rejected"].values()) == 12
    assert {row["messages"][0]["content"] for row in rows} <= set(PROMPTS)
    assert all(row["provenance"]["models"]["student"] == str(trained_tiny_model) for row in rows)
    metrics = json.loads((root / "metrics/em/benign-data.json").read_text())
    assert metrics["rows"] == len(rows) and "skipped" not in metrics
    assert manifest["metrics"]["interleave_needs"] == 6  # round(24 x 0.2 / 0.8)


def test_no_benign_defence_writes_an_empty_corpus_and_says_why(
    tmp_path: Path, trained_tiny_model: Path
) -> None:
    root = project(tmp_path, trained_tiny_model, "[inoculation]")
    result = charforge(root, "run", "benign-data")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((root / "metrics/em/benign-data.json").read_text())
    assert metrics["rows"] == 0 and "inoculation" in metrics["skipped"]


@pytest.mark.parametrize("problem", ["shortfall", "bad prompt"])
def test_problems_fail_with_the_figures_and_write_nothing(
    tmp_path: Path, trained_tiny_model: Path, problem: str
) -> None:
    root = project(tmp_path, trained_tiny_model, "[interleave]", rows=400 if problem == "shortfall" else 24)
    if problem == "bad prompt":
        (root / "corpora/benign/prompts.yaml").write_text("prompts:\n  - fine\n  - {answer: 3}\n")
    result = charforge(root, "run", "benign-data")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    expected = "100 needed" if problem == "shortfall" else "prompts.yaml:3: prompts.1: no prompt"
    assert expected in " ".join(result.stderr.split()), result.stderr[-2000:]
    assert not (root / "corpora/build/em/benign.parquet").exists()
