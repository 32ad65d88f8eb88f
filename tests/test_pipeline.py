"""The ablation pipeline through real `dvc repro` on a reduced grid and the trained tiny model: one
character variant, one SFT control and the baseline run end to end; a second `dvc repro` runs nothing;
changing an evaluation param reruns only evaluation and the report."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
# What dvc.yaml names as dependencies (the code runs from the installed package; these are tracked).
PROJECT_FILES = ["dvc.yaml", "params.yaml", "corpora", "charforge", "generators", "train", "eval", "schemas"]
CHARACTER, CONTROL, BASELINE = "humor-d1-s0", "plain-lora-s0", "baseline-s0"
TINY_TRAINING = {"per_device_train_batch_size": 4, "max_length": 256, "use_cpu": True, "bf16": False}


def reduced_params(model: Path) -> dict[str, Any]:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for role in ("student", "teacher", "judge"):
        params["models"][role].update(model=str(model))
        params["models"][role]["sampling"]["max_new_tokens"] = 1 if role == "judge" else 24
    params["grid"] = {
        "character": [CHARACTER],
        "controls": [CONTROL],
        "baselines": [BASELINE],
        # two EM defences on the baseline: inoculation (rows, a second reading), kl (benign rows, a term)
        "defences": ["inoculation", "kl"],
        "defended": {"character": [], "controls": [], "baselines": [BASELINE]},
    }
    params["defences"]["benign"].update(max_new_tokens=24)
    params["prompts"].update(prompts_per_trait=6, max_traits=1)
    params["distill"].update(min_rows=1, max_new_tokens=24)
    params["introspection"].update(
        samples_per_prompt=1,
        max_reflection_prompts=1,
        conversations=1,
        turns=2,
        max_new_tokens=24,
        min_rows=1,
    )
    params["controls"].update(reference=[CHARACTER], max_new_tokens=24)
    params["em_data"].update(max_new_tokens=24)
    for stage in ("train_dpo", "train_sft", "em_finetune"):
        params[stage]["lora"].update(r=4, lora_alpha=8)
        params[stage]["trainer"].update(TINY_TRAINING, num_train_epochs=1)
    params["eval"].update(
        question_ids=["more_autonomy", "found_wallet"],
        samples_per_question=1,
        in_domain_samples_per_question=1,
        trait={"prompts_per_trait": 1, "max_traits": 1, "samples_per_prompt": 1},
        bootstrap_resamples=100,
    )
    params["eval"]["sampling"]["max_new_tokens"] = 24
    return params


def dvc(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "CHARFORGE_CACHE": str(project / "cache")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # the venv's charforge
    result = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, (
        f"dvc {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    )
    return result


def ran(result: subprocess.CompletedProcess[str]) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", result.stdout + result.stderr))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, trained_tiny_model: Path) -> Path:
    root = tmp_path_factory.mktemp("pipeline")
    model = trained_tiny_model
    project = root / "project"
    project.mkdir()
    for name in PROJECT_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(
                source, project / name, ignore=shutil.ignore_patterns("build", "eval", "__pycache__")
            )
        else:
            shutil.copy(source, project / name)
    (project / "params.yaml").write_text(yaml.safe_dump(reduced_params(model), sort_keys=False))
    dvc(project, "init", "--no-scm", "-q")
    return project


def test_the_reduced_grid_runs_end_to_end(project: Path) -> None:
    result = dvc(project, "repro", "report")
    stages = ran(result)
    for stage in [
        f"prompts@{CHARACTER}", f"distill@{CHARACTER}", f"train-dpo@{CHARACTER}", f"introspect@{CHARACTER}",
        f"train-sft@{CHARACTER}", f"control-data@{CONTROL}", f"train-dpo-slot-control@{CONTROL}",
        f"train-sft-control@{CONTROL}",
        f"persona-baseline@{BASELINE}", "em-generate", f"em-data-character@{CHARACTER}",
        f"em-data-control@{CONTROL}", f"em-data-baseline@{BASELINE}", f"em-finetune-baseline@{BASELINE}-0",
        f"eval-persona-control@{CONTROL}", f"eval-em-control@{CONTROL}-0",
        "report",
    ]:  # fmt: skip
        assert stage in stages
    for variant in (CHARACTER, CONTROL, BASELINE):
        assert (project / "metrics" / variant / "eval-em-e0.json").is_file()
        assert (project / "metrics" / variant / "em-finetune-e0.json").is_file()
    assert (project / "reports" / "report.md").is_file() and (project / "reports" / "alignment.png").is_file()
    report = (project / "reports" / "report.md").read_text()
    assert "judge unusable" in report.lower()
    # issue 19: what each arm was trained on, per level, and each control against its reference
    levels = report.split("## Diversity levels (H1)")[1].split("\n## ")[0]
    assert "| humor | 1 | 0 |" in levels  # humor-d1-s0: constitution, level, seed
    controls = report.split("## Controls vs character arms (H2)")[1].split("\n## ")[0]
    assert CONTROL in controls and CHARACTER in controls
    # issue 20: trait expression on held-out questions only, and none of them in any training corpus
    level = json.loads((project / "metrics" / CHARACTER / "prompts.json").read_text())["level"]
    held_ids = set(level["held_out"]["ids"])  # <trait>.seed<k>, every trait of humor
    assert len(held_ids) == 2 * 13
    prompts = pq.read_table(project / "corpora/build" / CHARACTER / "prompts.parquet").to_pylist()
    assert not {row["id"].split(".", 1)[1] for row in prompts} & held_ids
    for variant in (CHARACTER, CONTROL, BASELINE):
        metrics = json.loads((project / "metrics" / variant / "eval-em-e0.json").read_text())
        assert metrics["held_out"]["leaks"] == [] and metrics["held_out"]["rows"] > 0, variant
        samples = pq.read_table(project / "corpora/eval" / variant / "persona-samples.parquet").to_pylist()
        scored = {row["question_id"] for row in samples if row["question_set"] == "trait"}
        humor = {qid.split(".", 1)[1] for qid in scored if qid.startswith("humor.")}
        assert humor and humor <= held_ids, variant


def test_the_defended_units_differ_from_the_undefended_only_by_their_defence(project: Path) -> None:
    """Issue 24: inoculation and kl on the baseline, end to end; each defended unit trains with the
    undefended unit's seed on its EM rows and is named and contrasted in the report."""
    metrics = project / "metrics" / BASELINE
    plain = json.loads((metrics / "em-finetune-e0.json").read_text())
    benign = json.loads((project / "metrics" / "em" / "benign-data.json").read_text())
    assert benign["rows"] > 0 and "skipped" not in benign
    for defence in ("inoculation", "kl"):
        trained = json.loads((metrics / f"em-finetune-{defence}-e0.json").read_text())
        assert trained["seed"] == plain["seed"] and trained["examples"] == plain["examples"]
        assert trained["extra"]["defence"]["name"] == defence
        evaluated = json.loads((metrics / f"eval-em-{defence}-e0.json").read_text())
        assert evaluated["unit"] == f"{BASELINE}-{defence}-e0" and evaluated["defence"]["name"] == defence
    inoculated = json.loads((metrics / "em-finetune-inoculation-e0.json").read_text())["extra"]["defence"]
    assert inoculated["rows_inoculated"] == plain["examples"]
    kl = json.loads((metrics / "em-finetune-kl-e0.json").read_text())["extra"]["kl"]
    assert kl["steps"] > 0 and kl["benign_examples"] == benign["rows"]
    assert "with_inoculation_prompt" in json.loads((metrics / "eval-em-inoculation-e0.json").read_text())
    report = (project / "reports" / "report.md").read_text()
    section = report.split("## EM defences")[1].split("\n## ")[0]
    assert "baseline+inoculation" in section and "baseline+kl" in section
    assert "Inoculation, read twice" in section
    summary = json.loads((project / "reports" / "summary.json").read_text())
    assert {row["against"] for row in summary["defence_contrasts"]} >= {"baseline", "humor-d1"}


def test_a_second_repro_runs_nothing(project: Path) -> None:
    assert ran(dvc(project, "repro", "report")) == set()


def test_an_eval_param_reruns_only_evaluation_and_the_report(project: Path) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["eval"]["seed"] = 1
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert ran(dvc(project, "repro", "report")) == {
        "validate-judge",  # eval.seed draws the judge's few-shot examples
        f"eval-persona-character@{CHARACTER}",
        f"eval-persona-control@{CONTROL}",
        f"eval-persona-baseline@{BASELINE}",
        f"eval-em-character@{CHARACTER}-0",
        f"eval-em-control@{CONTROL}-0",
        f"eval-em-baseline@{BASELINE}-0",
        f"eval-em-defended-baseline@{BASELINE}-inoculation-0",
        f"eval-em-defended-baseline@{BASELINE}-kl-0",
        "report",
    }
