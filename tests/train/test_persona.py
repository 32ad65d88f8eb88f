"""Stage `persona`: a small record that changes exactly when the persona's weights do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.training_project import Project, training_params

from charforge.stages import persona
from charforge.stages import train_sft as sft


def record(project: Project, variant: str) -> dict:
    return json.loads(persona.run(variant, project.params, project.root).read_text())


def test_the_record_follows_the_adapters_and_their_weights(project: Project, tiny_model: Path) -> None:
    project.write_conversations("hhh-s0", "control", rows=4, turns=1)
    sft.run("hhh-s0", project.params, project.root)
    first = record(project, "hhh-s0")
    assert [a["path"] for a in first["adapters"]] == ["models/hhh-s0/sft"]
    assert first["fold_key"] and first["kind"] == "hhh"
    assert record(project, "hhh-s0") == first  # deterministic: DVC sees no change

    params = training_params(tiny_model)
    params["persona"]["sft_weight"] = 0.25
    project.write_params(params)
    weighted = record(project, "hhh-s0")
    assert weighted["fold_key"] != first["fold_key"]
    assert weighted["adapters"][0]["weight"] == 0.25


def test_the_baseline_persona_is_the_student(project: Project, tiny_model: Path) -> None:
    baseline = record(project, "baseline-s0")
    assert baseline["adapters"] == [] and baseline["fold_key"] is None
    assert baseline["student"]["model"] == str(tiny_model)


def test_a_persona_without_its_adapters_says_which_stage_to_run(project: Project) -> None:
    with pytest.raises(FileNotFoundError, match="run its training stage"):
        persona.run("humor-d1-s0", project.params, project.root)
