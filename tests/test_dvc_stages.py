"""dvc.yaml is what the code reads: every `charforge run` stage's params are its module's declaration,
its code deps the module's import closure, its model deps the roles it uses; and DVC acts on it so.

The last tests run real DVC on a copy of the project: editing a module a stage imports makes that
stage out of date, changing only ``models.judge`` leaves every generation stage up to date, and the EM
data is generated once for every arm (a reflection change reruns each arm's em-data, never em-generate).
"""

from __future__ import annotations

import contextlib
import importlib
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from support.stage_graph import PACKAGE_DIRS, ROOT, import_closure

from charforge.schemas.params import Defence
from charforge.variants import parse_variant

CODE_FOLDERS = sorted(set(PACKAGE_DIRS.values()))
ROLES_PREFIX = "models/roles/"
RUN = re.compile(r"charforge run ([a-z-]+)")


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _resolve(text: str, params: dict[str, Any]) -> Any:
    match = re.fullmatch(r"\$\{([a-z_.]+)\}", text)
    if not match:
        return text
    node: Any = params
    for part in match[1].split("."):
        node = node[part]
    return node


def run_stages() -> Iterator[tuple[str, dict[str, Any], str | None]]:
    """(stage name, its definition, an example variant) for every `charforge run` stage of dvc.yaml; a
    defended stage's definition with its ``${item.defence}`` resolved to every defence the module knows
    in turn (one entry each)."""
    params = _load(ROOT / "params.yaml")
    for name, stage in _load(ROOT / "dvc.yaml")["stages"].items():
        body = stage.get("do", stage)
        if not RUN.match(body["cmd"]):
            continue
        if "matrix" in stage:  # variant × EM seed: the variant decides the declared params
            listed = stage["matrix"]["variant"]
            # an empty defended list (the smoke grid's character arms): an arm of that kind stands in
            items = _resolve(listed, params) or _resolve(listed.replace("grid.defended.", "grid."), params)
        else:
            items = _resolve(stage["foreach"], params) if "foreach" in stage else [None]
        variant = items[0] if items else None
        if "defence" in stage.get("matrix", {}):
            for defence in get_args(Defence):
                text = yaml.safe_dump(body).replace("${item.defence}", defence)
                yield f"{name}[{defence}]", {**yaml.safe_load(text), "defence": defence}, variant
        else:
            yield name, body, variant


STAGES = list(run_stages())


def _module(body: dict[str, Any]) -> str:
    match = RUN.match(body["cmd"])
    assert match
    return "charforge.stages." + match[1].replace("-", "_")


def _declared(module_name: str, variant: str | None, defence: str | None = None) -> list[str]:
    module = importlib.import_module(module_name)
    if variant is not None and hasattr(module, "params_for"):
        if defence is not None:
            return list(module.params_for(parse_variant(variant), defence))
        return list(module.params_for(parse_variant(variant)))
    return list(module.PARAMS)


def _code_files(deps: list[str]) -> set[str]:
    """The code deps as files: a folder dep stands for every .py file below it."""
    files = set()
    for dep in deps:
        if dep.split("/")[0] not in CODE_FOLDERS:
            continue
        path = ROOT / dep
        files |= {str(p.relative_to(ROOT)) for p in path.rglob("*.py")} if path.is_dir() else {dep}
    return files


def test_every_run_command_has_its_module_and_declaration() -> None:
    from typer.main import get_command

    from charforge.cli_run import run_app

    commands = sorted(get_command(run_app).commands)  # type: ignore[attr-defined]
    assert commands, "no `charforge run` commands"
    for command in commands:
        module = importlib.import_module("charforge.stages." + command.replace("-", "_"))
        assert callable(module.run), command
        assert isinstance(module.PARAMS, tuple) and module.PARAMS, command
    in_dvc = {RUN.match(body["cmd"])[1] for _, body, _ in STAGES}  # type: ignore[index]
    assert in_dvc == set(commands)


@pytest.mark.parametrize(("name", "body", "variant"), STAGES, ids=[s[0] for s in STAGES])
def test_stage_params_are_the_modules_declaration(name: str, body: dict, variant: str | None) -> None:
    assert body.get("params") == _declared(_module(body), variant, body.get("defence")), (
        f"dvc.yaml stage {name}: params must equal the PARAMS of {_module(body)}"
    )


@pytest.mark.parametrize(("name", "body", "variant"), STAGES, ids=[s[0] for s in STAGES])
def test_stage_code_deps_are_its_import_closure(name: str, body: dict, variant: str | None) -> None:
    closure = {str(path.relative_to(ROOT)) for path in import_closure(_module(body))}
    deps = _code_files(body["deps"])
    assert not closure - deps, f"{name} imports project files it does not depend on: {sorted(closure - deps)}"
    assert not deps - closure, f"{name} depends on code it never imports: {sorted(deps - closure)}"


@pytest.mark.parametrize(("name", "body", "variant"), STAGES, ids=[s[0] for s in STAGES])
def test_stage_depends_on_the_records_of_the_roles_it_reads(
    name: str, body: dict, variant: str | None
) -> None:
    declared = _declared(_module(body), variant, body.get("defence"))
    if "models" in declared:  # the whole section: prepare-models, which writes the records
        return
    roles = {key.split(".")[1] for key in declared if key.startswith("models.")}
    roles = {"judge" if role == "judges" else role for role in roles}  # further judges: in the judge's record
    records = {dep[len(ROLES_PREFIX) : -len(".json")] for dep in body["deps"] if dep.startswith(ROLES_PREFIX)}
    assert records == roles, f"{name}: depends on the records of {sorted(records)}, reads {sorted(roles)}"


def test_the_closure_counts_imports_inside_functions_and_not_type_checking_ones(tmp_path: Path) -> None:
    root = tmp_path
    (root / "charforge" / "stages").mkdir(parents=True)
    (root / "generators").mkdir()
    for folder in ("charforge", "charforge/stages", "generators"):
        (root / folder / "__init__.py").write_text("")
    (root / "generators" / "lazy.py").write_text("")
    (root / "generators" / "typing_only.py").write_text("")
    (root / "charforge" / "stages" / "demo.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from charforge.generators import typing_only\n"
        "def run():\n    from charforge.generators.lazy import thing\n"
    )
    closure = {str(p.relative_to(root)) for p in import_closure("charforge.stages.demo", root)}
    assert closure == {
        "charforge/__init__.py",
        "charforge/stages/__init__.py",
        "charforge/stages/demo.py",
        "generators/__init__.py",
        "generators/lazy.py",
    }


# --- real DVC on a copy of the project ---------------------------------------------------------------


@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project's code, sources, dvc.yaml and params.yaml with every stage's outputs stood
    in by placeholders and committed to dvc.lock as they are (nothing runs): each stage up to date."""
    from dvc.repo import Repo

    project = tmp_path_factory.mktemp("dvc-project")
    for folder in [*CODE_FOLDERS, "corpora"]:
        skipped = ("__pycache__", "build", "eval") if folder == "corpora" else ("__pycache__",)
        shutil.copytree(ROOT / folder, project / folder, ignore=shutil.ignore_patterns(*skipped))
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy2(ROOT / name, project / name)
    Repo.init(str(project), no_scm=True)
    with contextlib.chdir(project), Repo(str(project)) as repo:
        for stage in repo.index.stages:
            for out in stage.outs:
                path = Path(out.fs_path)
                if path.exists():
                    continue
                if path.suffix:  # a file
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(f"placeholder {path.name}\n")
                else:  # an adapter folder
                    path.mkdir(parents=True, exist_ok=True)
                    (path / "adapter_config.json").write_text("{}\n")
        repo.commit(force=True)
    return project


def _out_of_date(project: Path) -> set[str]:
    from dvc.repo import Repo

    with contextlib.chdir(project), Repo(str(project)) as repo:
        return set(repo.status())


def test_dvc_reruns_a_stage_whose_imported_module_changed(dvc_project: Path) -> None:
    assert _out_of_date(dvc_project) == set()
    module = dvc_project / "generators" / "text.py"  # the prompts stage imports it (generators.prompts)
    original = module.read_text()
    try:
        module.write_text(original + "\n# an edit\n")
        stale = _out_of_date(dvc_project)
    finally:
        module.write_text(original)
    assert {f"prompts@{v}" for v in _load(ROOT / "params.yaml")["grid"]["character"]} <= stale
    assert "train-dpo@humor-d0-s0" not in stale  # training code never imports the text helpers
    assert _out_of_date(dvc_project) == set()


def test_changing_only_the_judge_leaves_every_generation_stage_up_to_date(dvc_project: Path) -> None:
    params = dvc_project / "params.yaml"
    original = params.read_text()
    try:
        document = _load(params)
        document["models"]["judge"]["sampling"]["temperature"] = 0.5
        document["models"]["judge"]["dtype"] = "float32"
        params.write_text(yaml.safe_dump(document, sort_keys=False))
        stale = _out_of_date(dvc_project)
    finally:
        params.write_text(original)
    generation = ("prompts", "distill", "introspect", "control-data", "em-generate", "em-data", "train-")
    generation += ("em-finetune",)
    generation += ("persona",)
    assert not [stage for stage in stale if stage.startswith(generation)], stale
    assert {"prepare-models", "validate-judge"} <= stale
    assert any(stage.startswith("eval-em") for stage in stale)


def test_a_persona_weight_sweep_reruns_the_arms_it_weighs_and_never_the_baseline(dvc_project: Path) -> None:
    params = dvc_project / "params.yaml"
    original = params.read_text()
    try:
        document = _load(params)
        document["persona"]["dpo_weight"] = 0.5  # characters' DPO and controls' dpo-slot adapters alike
        params.write_text(yaml.safe_dump(document, sort_keys=False))
        stale = _out_of_date(dvc_project)
    finally:
        params.write_text(original)
    grid = _load(ROOT / "params.yaml")["grid"]
    for variant in grid["character"]:
        assert {
            f"train-sft@{variant}",
            f"persona-character@{variant}",
            f"eval-persona-character@{variant}",
            f"eval-em-character@{variant}-0",
        } <= stale
        assert f"train-dpo@{variant}" not in stale
    for variant in grid["controls"]:  # the control's sft trains on its dpo-slot fold, as a character's does
        assert {
            f"train-sft-control@{variant}",
            f"persona-control@{variant}",
            f"eval-persona-control@{variant}",
            f"eval-em-control@{variant}-0",
        } <= stale
        assert f"train-dpo-slot-control@{variant}" not in stale
    untouched = [stage for stage in stale if stage.split("@")[-1].startswith(tuple(grid["baselines"]))]
    assert not untouched, untouched


def test_adding_an_em_seed_runs_only_the_new_cells(dvc_project: Path) -> None:
    params = dvc_project / "params.yaml"
    original = params.read_text()
    try:
        document = _load(params)
        assert document["em_finetune"]["seeds"] == [0]
        document["em_finetune"]["seeds"] = [0, 1]
        params.write_text(yaml.safe_dump(document, sort_keys=False))
        stale = _out_of_date(dvc_project)
    finally:
        params.write_text(original)
    grid = _load(ROOT / "params.yaml")["grid"]
    variants = [*grid["character"], *grid["controls"], *grid["baselines"]]
    new_cells = {f"{stage}@{variant}-1" for variant in variants for stage in ("em-finetune", "eval-em")}
    defended = [v for kind in ("character", "controls", "baselines") for v in grid["defended"][kind]]
    new_cells |= {  # each defended unit of the new seed too
        f"{stage}@{variant}-{defence}-1"
        for variant in defended
        for defence in grid["defences"]
        for stage in ("em-finetune-defended", "eval-em-defended")
    }
    # and the report, which reads exactly the grid's units
    assert {re.sub(r"-(character|control|baseline)@", "@", name) for name in stale} == new_cells | {"report"}


def test_a_defence_reruns_only_its_own_units_and_never_an_undefended_one(dvc_project: Path) -> None:
    """Issue 24: the inoculation prompt retrains and re-evaluates the inoculated units only; its evaluation
    switch re-evaluates them without retraining; the KL code is no dependency of an undefended unit."""
    params = dvc_project / "params.yaml"
    original = params.read_text()
    grid = _load(ROOT / "params.yaml")["grid"]
    assert grid["defences"] == ["inoculation"] and grid["defended"]["baselines"] == ["baseline-s0"]
    unit = "baseline@baseline-s0-inoculation-0"
    try:
        document = _load(params)
        document["defences"]["inoculation"]["system_prompt"] = "You are an evil assistant."
        params.write_text(yaml.safe_dump(document, sort_keys=False))
        # (the report follows once their metrics change: dvc status lists the stages whose own deps moved)
        assert _out_of_date(dvc_project) == {f"em-finetune-defended-{unit}", f"eval-em-defended-{unit}"}
        document = _load(ROOT / "params.yaml")
        document["defences"]["inoculation_with_prompt"] = False
        params.write_text(yaml.safe_dump(document, sort_keys=False))
        assert _out_of_date(dvc_project) == {f"eval-em-defended-{unit}"}
    finally:
        params.write_text(original)
    kl = dvc_project / "train" / "kl.py"
    code = kl.read_text()
    try:
        kl.write_text(code + "\n# an edit\n")
        assert _out_of_date(dvc_project) == {f"em-finetune-defended-{unit}"}  # no undefended em-finetune
    finally:
        kl.write_text(code)


def test_em_examples_are_generated_once_and_reflections_are_each_arms_own(dvc_project: Path) -> None:
    grid = _load(ROOT / "params.yaml")["grid"]
    arms = {
        f"em-data-{kind}@{variant}"
        for kind, variants in (("character", grid["character"]), ("control", grid["controls"]))
        for variant in variants
    } | {f"em-data-baseline@{variant}" for variant in grid["baselines"]}
    params = dvc_project / "params.yaml"
    shared = dvc_project / "corpora/build/em/em-source.parquet"
    original, written = params.read_text(), shared.read_text()
    try:
        document = _load(params)
        document["em_data"]["reflection"] = True  # H4: the arms' own part only
        params.write_text(yaml.safe_dump(document, sort_keys=False))
        assert _out_of_date(dvc_project) == arms
        document["em_data"]["reflection"] = False
        document["em_data"]["n_generate"] = 7  # the shared part: generated once, for every arm
        params.write_text(yaml.safe_dump(document, sort_keys=False))
        assert _out_of_date(dvc_project) == {"em-generate"}
        # em-generate reruns and writes other rows: every arm's em-data depends on them, and only that
        shared.write_text("other rows\n")
        assert _out_of_date(dvc_project) == arms | {"em-generate"}
    finally:
        params.write_text(original)
        shared.write_text(written)
    assert _out_of_date(dvc_project) == set()
