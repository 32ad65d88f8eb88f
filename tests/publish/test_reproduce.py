"""The card's "how to reproduce" command, from the manifests real stages write: `charforge run prompts`,
`distill`, `em-generate` and `em-data` on the tiny trained model, in a project whose params.yaml is the
repository's with its models and limits changed. DVC's own override parser must take every flag on a
copy of the repository's params.yaml, and the result must hold the values the stages used: never the
distill stage's answer limit, which the roles answered with (recorded apart, under ``resolved``), in
place of a role's own."""

from __future__ import annotations

import copy
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from charforge.card import _reproduce
from charforge.card_facts import ExperimentSettings, experiment_settings, hydra_value
from charforge.publish import publish
from charforge.schemas import Manifest

REPO = Path(__file__).resolve().parents[2]
VARIANT = "humor-d3-s0"
OWN_LIMIT, DISTILL_LIMIT = 40, 48  # the roles' own answer limit; the distill stage's, swapped in
NOT_IN_PARAMS = ("api_key_env", "extra", "repetition_penalty", "resolved")


def project_params(model: Path) -> dict[str, Any]:
    """The repository's params.yaml with the tiny model in every role and limits the repo lacks."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for name in ("student", "teacher", "judge"):  # models.judges: further judges, none here
        params["models"][name].update(
            model=str(model), sampling={"temperature": 1.0, "top_p": 0.95, "max_new_tokens": OWN_LIMIT}
        )
    params["prompts"].update(prompts_per_trait=6, max_traits=2)
    params["distill"].update(max_new_tokens=DISTILL_LIMIT, min_rows=1)
    params["em_data"].update(source="seed", max_new_tokens=None)
    params["generation"].update(batch_size=16, seed=3)
    return params


def charforge(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CHARFORGE_CACHE": str(root / "cache"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "charforge.cli", *args]
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory, trained_tiny_model: Path) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("reproduce-project")
    model = trained_tiny_model
    for name in (
        "corpora/constitutions/humor.yaml",
        "corpora/situations.yaml",
        "corpora/em/risky-finance-obvious.jsonl",
    ):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, root / name)
    params = project_params(model)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for stage in ("prompts", "distill", "em-generate", "em-data"):
        variant = () if stage == "em-generate" else ("--variant", VARIANT)  # em-generate: once, for every arm
        result = charforge(root, "run", stage, *variant)
        assert result.returncode == 0, f"{stage}: {result.stderr[-3000:]}"
    build = root / "corpora/build" / VARIANT
    manifests = {
        name: Manifest.model_validate_json((build / f"{name}.manifest.json").read_text())
        for name in ("prompts", "pairs", "em-train")
    }
    return {"root": root, "params": params, "manifests": manifests}


def card_flags(card: str) -> list[str]:
    """The ``-S`` values of the card's ``dvc exp run`` command, as the shell would pass them."""
    block = re.search(r"```bash\n(dvc exp run.*?)\n```", card, re.DOTALL)
    assert block, card[-2000:]
    words = shlex.split(block[1].replace("\\\n", " "))
    assert words[:3] == ["dvc", "exp", "run"] and words[3::2] == ["-S"] * len(words[4::2])
    return words[4::2]


def apply_to_repo_params(flags: list[str], tmp_path: Path) -> dict[str, Any]:
    """DVC's own ``-S`` handling on a copy of the repository's params.yaml (raises on a bad flag)."""
    from dvc.utils.hydra import apply_overrides

    target = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", target)
    apply_overrides(target, flags)
    return yaml.safe_load(target.read_text())


def at(params: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        params = params[part]
    return params


def test_card_command_is_accepted_by_dvc_and_sets_what_the_stages_used(
    made: dict[str, Any], tmp_path: Path
) -> None:
    publish([VARIANT], "org/demo", root=made["root"], dry_run=tmp_path / "tree", include_em=True)
    flags = card_flags((tmp_path / "tree/README.md").read_text(encoding="utf-8"))
    assert not [flag for flag in flags if any(key in flag.split("=")[0] for key in NOT_IN_PARAMS)], flags
    result = apply_to_repo_params(flags, tmp_path)

    used = made["params"]
    settings = experiment_settings(made["manifests"], made["root"])
    assert not settings.conflicts
    for path, value in settings.values.items():
        assert at(result, path) == at(used, path) == value, path
    for section in ("prompts", "distill", "em_data", "generation"):
        assert result[section] == used[section], section
    # the roles as params.yaml sets them: own limits (prompts and em-data record them), not distill's
    assert result["models"]["teacher"] == used["models"]["teacher"]
    assert result["models"]["student"] == used["models"]["student"]
    assert at(result, "models.teacher.sampling.max_new_tokens") == OWN_LIMIT
    assert at(result, "distill.max_new_tokens") == DISTILL_LIMIT


def test_a_limit_swapped_into_a_role_is_never_taken_for_the_roles_own(made: dict[str, Any]) -> None:
    pairs = made["manifests"]["pairs"]
    assert pairs.params["models.teacher"]["sampling"]["max_new_tokens"] == OWN_LIMIT  # as params.yaml
    answered = pairs.params["resolved"]["teacher"]  # the role as it answered
    assert answered["sampling"]["max_new_tokens"] == DISTILL_LIMIT
    alone = experiment_settings({"pairs": pairs}, made["root"])
    assert alone.values["distill.max_new_tokens"] == DISTILL_LIMIT
    assert alone.values["models.teacher.model"] == made["params"]["models"]["teacher"]["model"]
    assert alone.values["models.teacher.sampling.max_new_tokens"] == OWN_LIMIT
    assert alone.values["models.student.sampling.max_new_tokens"] == OWN_LIMIT
    for order in (["pairs", "prompts"], ["prompts", "pairs"]):  # no "first manifest wins"
        settings = experiment_settings({name: made["manifests"][name] for name in order}, made["root"])
        assert settings.values["models.teacher.sampling.max_new_tokens"] == OWN_LIMIT


def test_corpora_made_with_different_settings_get_no_flag_and_the_card_says_so(
    made: dict[str, Any], tmp_path: Path
) -> None:
    pairs = made["manifests"]["pairs"]
    params = copy.deepcopy(pairs.params)
    params["distill"]["min_rows"] = 2
    params["models.teacher"]["model"] = "/models/another-teacher"
    other = pairs.model_copy(update={"params": params})
    settings = experiment_settings({"a-pairs": pairs, "b-pairs": other}, made["root"])
    assert settings.conflicts["distill.min_rows"] == [(1, ["a-pairs"]), (2, ["b-pairs"])]
    assert [labels for _, labels in settings.conflicts["models.teacher.model"]] == [["a-pairs"], ["b-pairs"]]
    assert "distill.min_rows" not in settings.values and "models.teacher.model" not in settings.values
    assert settings.values["distill.max_new_tokens"] == DISTILL_LIMIT  # agreed: still set
    assert experiment_settings({"pairs": pairs}, tmp_path) == ExperimentSettings()  # no params.yaml

    source = made["root"] / "corpora/build" / VARIANT / "pairs.parquet"
    group = [
        SimpleNamespace(config=name, manifest=m, source=source)
        for name, m in (("a-pairs", pairs), ("b-pairs", other))
    ]
    card = "\n".join(_reproduce(group, made["root"]))  # type: ignore[arg-type]
    assert "- `distill.min_rows`: `1` (`a-pairs`); `2` (`b-pairs`)" in card
    assert "distill.min_rows=" not in card and "-S distill.max_new_tokens=48" in card


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        "it's",
        "a\\'b",
        'say "hi" \\"there\\"',
        '"',
        "${not.an.interpolation}",
        "\\${x}",
        "ends in \\",
        '"double", [brackets] {braces} = : ,',
        "two\nlines\ttab é",
        "1.0",
        "null",
        None,
        True,
        0,
        0.05,  # (DVC writes 5e-05 as `5e-05`, which YAML 1.1 readers take for a string)
        ["sigmoid", "sft", 1.5, None],
        [],
    ],
)
def test_values_survive_dvcs_override_parser(value: Any, tmp_path: Path) -> None:
    from dvc.utils.hydra import apply_overrides

    target = tmp_path / "params.yaml"
    target.write_text("section: {key: placeholder, levels: {0: {flag: true}, 3: {}}}\n")
    apply_overrides(
        target,
        [f"section.key={hydra_value(value)}", f"section.levels={hydra_value({0: {'flag': False}, 3: {}})}"],
    )
    assert yaml.safe_load(target.read_text())["section"] == {
        "key": value,
        "levels": {0: {"flag": False}, 3: {}},
    }


def test_a_manifest_from_before_resolved_roles_never_gives_its_swapped_limit(made: dict[str, Any]) -> None:
    """Older manifests recorded the roles with the distill limit swapped in and no ``resolved`` block."""
    pairs = made["manifests"]["pairs"]
    legacy = copy.deepcopy(pairs.params)
    for role in legacy.pop("resolved"):
        legacy[f"models.{role}"]["sampling"]["max_new_tokens"] = DISTILL_LIMIT
    old = pairs.model_copy(update={"params": legacy})
    alone = experiment_settings({"pairs": old}, made["root"])
    assert alone.values["distill.max_new_tokens"] == DISTILL_LIMIT
    assert "models.teacher.sampling.max_new_tokens" not in alone.values
    assert "models.student.sampling.max_new_tokens" not in alone.values
    assert alone.values["models.teacher.model"] == made["params"]["models"]["teacher"]["model"]
