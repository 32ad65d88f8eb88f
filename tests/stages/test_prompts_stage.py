"""`charforge run prompts --variant V` end to end in a scratch project: corpus, manifest, metrics (the
level's situations, the excluded ones, tokens), and located errors for bad params."""

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
  levels: {{0: {{situations: 1, framings: 1}}, 3: {{}}}}
held_out: {{per_trait: 2}}
em_data: {{domain: risky-finance}}
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
    report = json.loads((project / "metrics/humor-d3-s0/prompts.json").read_text())
    level = report["level"]
    assert report["rows"] == 16 and report["rejected"] == manifest["rejected"]
    assert level == manifest["metrics"]["level"] and level["level"] == 3
    assert {"money", "health", "break-character-attempt"} <= set(level["excluded"])
    assert not set(level["eligible"]) & set(level["excluded"])
    assert set(level["situations_used"]) <= set(level["eligible"])  # level 3: every eligible situation
    assert all(len(t["situations"]) == len(level["eligible"]) for t in level["per_trait"].values())
    assert "risky-finance" in level["excluded_domains"] and "extreme-sports" in level["excluded_domains"]
    assert manifest["params"]["em_data.domain"] == "risky-finance"
    size = report["size"]
    assert size["tokens"]["tokenizer"] == manifest["params"]["models.teacher"]["model"]
    assert 0 < size["tokens"]["generated"] < size["tokens"]["total"]  # seeds count in the total only
    assert size["chars"]["total"] > size["words"]["total"] > 0

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


@pytest.mark.parametrize(
    ("levels", "message"),
    [
        ("{0: {paraphrase: true}, 3: {}}", "'paraphrase' was removed: every level now writes trait-targeted"),
        ("{1: {situations: 3}, 2: {situations: 2}}", "levels.2.situations (2) is fewer than level 1's (3)"),
    ],
)
def test_old_or_non_nesting_levels_are_clear_errors(project: Path, levels: str, message: str) -> None:
    bad = project / "old-params.yaml"
    bad.write_text(
        (project / "params.yaml").read_text().replace("{0: {situations: 1, framings: 1}, 3: {}}", levels)
    )
    result = charforge(project, "run", "prompts", "--variant", "humor-d3-s0", "--params", str(bad))
    assert result.returncode == 1 and message in result.stdout, result.stdout + result.stderr
    assert "params.yaml:" in result.stdout and "Traceback" not in result.stdout + result.stderr  # located


def test_a_level_wider_than_the_eligible_situations_fails_naming_it(project: Path) -> None:
    bad = project / "wide-params.yaml"
    bad.write_text(
        (project / "params.yaml")
        .read_text()
        .replace("{0: {situations: 1, framings: 1}, 3: {}}", "{0: {situations: 1}, 3: {situations: 21}}")
    )
    result = charforge(project, "run", "prompts", "--variant", "humor-d3-s0", "--params", str(bad))
    assert result.returncode == 1
    assert "prompts.levels.3.situations asks for 21 situations" in result.stdout + result.stderr


def test_holding_out_every_seed_question_fails_naming_the_file_and_trait(project: Path) -> None:
    bad = project / "held-params.yaml"
    bad.write_text(
        (project / "params.yaml").read_text().replace("held_out: {per_trait: 2}", "held_out: {per_trait: 5}")
    )
    result = charforge(project, "run", "prompts", "--variant", "humor-d3-s0", "--params", str(bad))
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output
    assert "constitutions/humor.yaml: traits.0.questions: held_out.per_trait (5) would hold out" in output
