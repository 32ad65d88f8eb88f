"""Profiles: the shipped params.yaml is the smoke profile, both profiles set the same keys, the full
profile's values are valid params, and switching back and forth is exact."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from support.factories import run_cli

from charforge.params import load_section
from charforge.profiles import ProfileError, apply_profile, leaves
from charforge.schemas.params import EvalConfig, ModelsConfig, PromptsConfig

REPO = Path(__file__).resolve().parents[1]


def profile(name: str) -> dict:
    return yaml.safe_load((REPO / "profiles" / f"{name}.yaml").read_text())


def test_both_profiles_set_the_same_keys() -> None:
    assert {path for path, _ in leaves(profile("smoke"))} == {path for path, _ in leaves(profile("full"))}


def test_the_shipped_params_are_the_smoke_profile(tmp_path: Path) -> None:
    params = shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    assert apply_profile("smoke", Path(params), REPO) == []


def test_full_and_back_is_exact_and_valid(tmp_path: Path) -> None:
    params = Path(shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml"))
    original = yaml.safe_load(params.read_text())
    changed = apply_profile("full", params, REPO)
    assert "models.student.model" in changed and "grid.character" in changed
    models = load_section(ModelsConfig, "models", params)
    assert (models.student.backend, models.student.model) == ("vllm", "Qwen/Qwen2.5-7B-Instruct")
    assert models.judge.model == "gpt-4.1-mini-2025-04-14"
    assert load_section(EvalConfig, "eval", params).samples_per_question == 50
    assert load_section(PromptsConfig, "prompts", params).max_traits is None
    assert yaml.safe_load(params.read_text())["em_finetune"]["lora"]["r"] == 32  # untouched keys stay
    apply_profile("smoke", params, REPO)
    assert yaml.safe_load(params.read_text()) == original


def test_an_unknown_profile_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="full, smoke"):
        apply_profile("fast", tmp_path / "params.yaml", REPO)


def test_the_command(tmp_path: Path) -> None:
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(REPO / "profiles", tmp_path / "profiles")
    result = run_cli("profile", "full", cwd=tmp_path)
    assert result.returncode == 0 and "models.student.model" in result.stderr
    assert run_cli("profile", "nope", cwd=tmp_path).returncode == 2
