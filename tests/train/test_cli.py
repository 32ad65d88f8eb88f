"""`charforge run train-*` as a user runs it: clear errors with exit codes, never a traceback."""

from __future__ import annotations

import json

import yaml
from support.factories import run_cli
from support.training_project import Project


def test_a_controls_two_adapters_from_the_command_line(project: Project) -> None:
    project.write_control_corpora("plain-lora-s0", rows=4)
    slot = run_cli("run", "train-dpo-slot", "--variant", "plain-lora-s0", cwd=project.root)
    assert slot.returncode == 0, slot.stderr
    assert "train-dpo-slot plain-lora-s0: 4 examples, 2 optimizer steps" in slot.stderr
    result = run_cli("run", "train-sft", "--variant", "plain-lora-s0", cwd=project.root)
    assert result.returncode == 0, result.stderr
    assert "train-sft plain-lora-s0: 4 examples, 2 optimizer steps" in result.stderr
    for stage in ("train-dpo-slot", "train-sft"):
        assert json.loads((project.root / f"metrics/plain-lora-s0/{stage}.json").read_text())["examples"] == 4


def test_a_control_sft_without_its_dpo_slot_says_which_stage_to_run(project: Project) -> None:
    project.write_control_corpora("hhh-s0")
    result = run_cli("run", "train-sft", "--variant", "hhh-s0", cwd=project.root)
    assert result.returncode == 1
    assert "models/hhh-s0/dpo-slot: not a saved LoRA adapter" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_missing_corpus_names_the_file(project: Project) -> None:
    result = run_cli("run", "train-dpo", "--variant", "humor-d1-s0", cwd=project.root)
    assert result.returncode == 1
    assert "corpora/build/humor-d1-s0/pairs.parquet: training corpus not found" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_an_invalid_corpus_is_refused_with_its_errors(project: Project) -> None:
    path = project.write_pairs()
    path.write_bytes(path.read_bytes()[:-20])  # truncated parquet
    result = run_cli("run", "train-dpo", "--variant", "humor-d1-s0", cwd=project.root)
    assert result.returncode == 1
    assert "pairs.parquet: not a valid pairs corpus" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_control_has_no_dpo_stage_and_a_character_no_dpo_slot(project: Project) -> None:
    result = run_cli("run", "train-dpo", "--variant", "hhh-s0", cwd=project.root)
    assert result.returncode == 2 and "control" in result.stderr
    result = run_cli("run", "train-dpo-slot", "--variant", "humor-d1-s0", cwd=project.root)
    assert result.returncode == 2 and "character variant has train-dpo" in result.stderr


def test_a_misspelt_trainer_key_is_located_in_params(project: Project) -> None:
    params = yaml.safe_load(project.params.read_text())
    params["train_dpo"]["trainer"]["learnig_rate"] = 0.1
    project.write_params(params)
    project.write_pairs()
    result = run_cli("run", "train-dpo", "--variant", "humor-d1-s0", cwd=project.root)
    assert result.returncode == 1
    assert "train_dpo.trainer.learnig_rate: not a field of DPOConfig" in result.stdout
    assert "params.yaml:" in result.stdout and "Traceback" not in result.stderr
