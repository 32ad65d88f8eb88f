"""Stage `persona`: a small record that changes exactly when the persona's weights do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.training_project import Project, training_params

from charforge.stages import persona
from charforge.stages import train_dpo_slot as dpo_slot
from charforge.stages import train_sft as sft


def record(project: Project, variant: str) -> dict:
    return json.loads(persona.run(variant, project.params, project.root).read_text())


def test_the_record_follows_the_adapters_and_their_weights(project: Project, tiny_model: Path) -> None:
    project.write_control_corpora("hhh-s0")
    dpo_slot.run("hhh-s0", project.params, project.root)
    sft.run("hhh-s0", project.params, project.root)
    first = record(project, "hhh-s0")
    # A control's persona has the character arm's two slots: dpo-slot at dpo_weight, sft at sft_weight.
    assert [a["path"] for a in first["adapters"]] == ["models/hhh-s0/dpo-slot", "models/hhh-s0/sft"]
    assert first["fold_key"] and first["kind"] == "hhh"
    assert record(project, "hhh-s0") == first  # deterministic: DVC sees no change

    params = training_params(tiny_model)
    params["persona"]["sft_weight"] = 0.25
    project.write_params(params)
    weighted = record(project, "hhh-s0")
    assert weighted["fold_key"] != first["fold_key"]
    assert [a["weight"] for a in weighted["adapters"]] == [1.0, 0.25]

    params["persona"]["dpo_weight"] = 0.5  # a control's persona follows the DPO slot's weight too
    project.write_params(params)
    both = record(project, "hhh-s0")
    assert both["fold_key"] not in (first["fold_key"], weighted["fold_key"])
    assert [a["weight"] for a in both["adapters"]] == [0.5, 0.25]


def test_the_baseline_persona_is_the_student(project: Project, tiny_model: Path) -> None:
    baseline = record(project, "baseline-s0")
    assert baseline["adapters"] == [] and baseline["fold_key"] is None
    assert baseline["student"]["model"] == str(tiny_model)


def test_a_persona_without_its_adapters_says_which_stage_to_run(project: Project) -> None:
    with pytest.raises(FileNotFoundError, match="run its training stage"):
        persona.run("humor-d1-s0", project.params, project.root)
