"""`charforge run prompts --variant V` end to end in a scratch project: corpus, manifest, metrics."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def params(model: Path) -> str:
    return f"""
models:
  student: {{model: {model}}}
  teacher: {{model: {model}, sampling: {{temperature: 1.0, max_new_tokens: 40}}}}
  judge: {{model: {model}}}
generation: {{batch_size: 4, seed: 0}}
prompts:
  prompts_per_trait: 8
  max_traits: 2
  levels: {{0: {{paraphrase: true}}, 3: {{}}}}
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, tiny_model_with_stops: Path) -> Path:
    root = tmp_path_factory.mktemp("project")
    (root / "corpora" / "constitutions").mkdir(parents=True)
    shutil.copy(REPO / "corpora/constitutions/humor.yaml", root / "corpora/constitutions/humor.yaml")
    shutil.copy(REPO / "corpora/situations.yaml", root / "corpora/situations.yaml")
    (root / "params.yaml").write_text(params(tiny_model_with_stops))
    return root


def charforge(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CHARFORGE_CACHE": str(root / "cache")}
    command = [sys.executable, "-m", "charforge.cli", *args]
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=900)


def test_run_prompts_writes_a_valid_corpus_with_diversity(project: Path) -> None:
    result = charforge(project, "run", "prompts", "--variant", "humor-d3-s0")
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    corpus = project / "corpora/build/humor-d3-s0/prompts.parquet"
    manifest = json.loads((project / "corpora/build/humor-d3-s0/prompts.manifest.json").read_text())
    assert manifest["rows"] == 16 and manifest["kind"] == "prompts" and manifest["variant"] == "humor-d3-s0"
    assert {parent["kind"] for parent in manifest["parents"]} == {"constitution", "situations"}
    assert manifest["params"]["variant"] == {"constitution": "humor", "level": 3, "seed": 0}
    diversity = json.loads((project / "metrics/humor-d3-s0/diversity.json").read_text())
    assert diversity == manifest["metrics"]["diversity"]
    assert isinstance(manifest["metrics"]["kept_trimmed_cut_off"], int)
    assert len(diversity["embedding"]["weights_sha256"]) == 64
    assert diversity["per_trait_mean"]["vendi_score"] > 1

    validated = charforge(project, "validate", str(corpus))
    assert validated.returncode == 0, validated.stdout + validated.stderr
    shown = charforge(project, "inspect", str(corpus))
    assert shown.returncode == 0 and "diversity" in shown.stdout and "rows per situation" in shown.stdout

    again = charforge(project, "run", "prompts", "--variant", "humor-d3-s0")
    assert again.returncode == 0
    rerun = json.loads((project / "corpora/build/humor-d3-s0/prompts.manifest.json").read_text())
    assert rerun["content_sha256"] == manifest["content_sha256"]  # same params + seed, same corpus


def test_run_prompts_usage_and_param_errors(project: Path) -> None:
    assert charforge(project, "run", "prompts", "--variant", "Humor").returncode == 2
    missing_level = charforge(project, "run", "prompts", "--variant", "humor-d7-s0")
    assert missing_level.returncode == 1 and "diversity level 7 is not defined" in missing_level.stderr
    bad = project / "bad-params.yaml"
    bad.write_text(
        (project / "params.yaml").read_text().replace("prompts_per_trait: 8", "prompts_per_trait: 0")
    )
    result = charforge(project, "run", "prompts", "--variant", "humor-d3-s0", "--params", str(bad))
    assert result.returncode == 1
    assert "prompts.prompts_per_trait: Input should be greater than or equal to 1" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
