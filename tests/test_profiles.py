"""Profiles: the shipped params.yaml is the smoke profile, both profiles set the same keys and every one
of them is read by a stage, the full profile is the published recipes with every arm at two persona
seeds, and the switch tells the truth: params.yaml's header, ``profile`` key and comments are the active
profile's, and switching back and forth is exact, byte for byte."""

from __future__ import annotations

import importlib
import inspect
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from ruamel.yaml import YAML
from support.factories import run_cli

from charforge.params import load_section
from charforge.profiles import PROFILE_KEY, ProfileError, apply_profile, leaves, profile_names
from charforge.schemas.params import (
    ControlsConfig,
    EmFinetuneConfig,
    EvalConfig,
    ModelsConfig,
    PersonaConfig,
    PromptsConfig,
    TrainStageConfig,
)
from charforge.variants import parse_variant

REPO = Path(__file__).resolve().parents[1]
RUN = re.compile(r"charforge run ([a-z-]+)")
TEMPLATE = re.compile(r"\$\{([a-z_.]+)(?:\[\d+\])?\}")
# Words that tie a comment to one profile's values: a comment every profile shares may not use them.
ARMS = ("character", "controls", "baselines")  # grid's lists of variants (defended ones are among them)
PROFILE_WORDS = re.compile(r"real runs?|literature|\bsmoke\b|\(full\b|\bfull:", re.IGNORECASE)


def profile(name: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / "profiles" / f"{name}.yaml").read_text())


def applied(name: str, tmp_path: Path) -> str:
    """The shipped params.yaml with profile ``name`` applied, as text."""
    params = Path(shutil.copy(REPO / "params.yaml", tmp_path / f"params-{name}.yaml"))
    apply_profile(name, params, REPO)
    return params.read_text()


def header(text: str) -> str:
    """The comment block a YAML text starts with."""
    lines = text.splitlines(keepends=True)
    end = next(i for i, line in enumerate(lines) if line.strip() and not line.startswith("#"))
    return "".join(lines[:end]).rstrip("\n")


def end_of_line_comments(name: str) -> set[str]:
    """Every end-of-line comment profile ``name`` writes: on its keys' lines in block mappings."""
    document = YAML().load((REPO / "profiles" / f"{name}.yaml").read_text())
    found: set[str] = set()

    def walk(node: Any) -> None:
        if not hasattr(node, "items") or node.fa.flow_style():
            return
        for key, value in node.items():
            token = node.ca.items.get(key, [None] * 4)[2]
            if token is not None and token.value.startswith("#"):
                found.add(token.value.partition("\n")[0])
            walk(value)

    walk(document)
    return found


def comment(line: str) -> str | None:
    """The comment of a params.yaml line (its strings hold no ``#``)."""
    match = re.search(r"(?:^|\s)(#.*)$", line)
    return match[1] if match else None


def test_both_profiles_set_the_same_keys() -> None:
    assert profile_names(REPO) == ["full", "smoke"]
    assert {path for path, _ in leaves(profile("smoke"))} == {path for path, _ in leaves(profile("full"))}


def test_the_shipped_params_are_the_smoke_profile(tmp_path: Path) -> None:
    shipped = (REPO / "params.yaml").read_text()
    params = Path(shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml"))
    assert apply_profile("smoke", params, REPO) == []
    assert params.read_text() == shipped  # values, comments and header alike


def test_full_and_back_is_exact_and_valid(tmp_path: Path) -> None:
    params = Path(shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml"))
    changed = apply_profile("full", params, REPO)
    assert {"profile", "models.student.model", "grid.character", "persona.sft_weight"} <= set(changed)
    models = load_section(ModelsConfig, "models", params)
    assert (models.student.backend, models.student.model) == ("vllm", "Qwen/Qwen2.5-7B-Instruct")
    assert models.judge.model == "gpt-4.1-mini-2025-04-14"
    assert load_section(EvalConfig, "eval", params).samples_per_question == 50
    assert load_section(PromptsConfig, "prompts", params).max_traits is None
    for key in ("train_dpo", "train_sft"):
        load_section(TrainStageConfig, key, params)
    load_section(EmFinetuneConfig, "em_finetune", params)
    assert yaml.safe_load(params.read_text())["em_finetune"]["lora"]["r"] == 32  # untouched keys stay
    apply_profile("smoke", params, REPO)
    assert params.read_text() == (REPO / "params.yaml").read_text()


def test_the_full_profile_is_the_published_recipes(tmp_path: Path) -> None:
    """DESIGN §5 and the public repositories: Open Character Training's DPO and SFT runs and persona
    weights, model-organisms-for-EM's EM fine-tune; each trainer section builds its TRL config (a name
    TRL does not know fails here, with the line in params.yaml)."""
    from trl import DPOConfig, SFTConfig

    from charforge.train.config import lora_config, trainer_config

    full = profile("full")
    for key in ("train_dpo", "train_sft"):  # warm-up ratio 0.1 (a warmup_steps below 1), betas (0.9, 0.98)
        trainer = full[key]["trainer"]
        assert (trainer["warmup_steps"], trainer["adam_beta1"], trainer["adam_beta2"]) == (0.1, 0.9, 0.98)
        assert (full[key]["lora"]["r"], full[key]["lora"]["lora_alpha"], trainer["learning_rate"]) == (
            64,
            128,
            5e-5,
        )
        assert trainer["per_device_train_batch_size"] * trainer["gradient_accumulation_steps"] == 32
    assert (full["train_dpo"]["trainer"]["max_length"], full["train_sft"]["trainer"]["max_length"]) == (
        1024,
        3072,
    )
    em = full["em_finetune"]["trainer"]
    assert (em["warmup_steps"], em["weight_decay"], em["max_length"], em["learning_rate"]) == (
        5,
        0.01,
        2048,
        1e-5,
    )
    assert em["per_device_train_batch_size"] * em["gradient_accumulation_steps"] == 16
    assert full["persona"] == {"dpo_weight": 1.0, "sft_weight": 0.25}

    params = tmp_path / "params.yaml"
    params.write_text(applied("full", tmp_path).replace("bf16: true", "bf16: false"))  # this machine: CPU
    assert load_section(PersonaConfig, "persona", params).sft_weight == 0.25
    built = {}
    for key, config_class, model in (
        ("train_dpo", DPOConfig, TrainStageConfig),
        ("train_sft", SFTConfig, TrainStageConfig),
        ("em_finetune", SFTConfig, EmFinetuneConfig),
    ):
        section = load_section(model, key, params)
        built[key] = trainer_config(config_class, section, key, params, output_dir=tmp_path / key, seed=0)
        lora_config(section, key, params)
    assert built["train_dpo"].get_warmup_steps(100) == 10  # the ratio, not 0 steps
    assert (built["train_dpo"].adam_beta1, built["train_dpo"].adam_beta2) == (0.9, 0.98)
    assert built["em_finetune"].get_warmup_steps(100) == 5
    assert (built["em_finetune"].weight_decay, built["em_finetune"].max_length) == (0.01, 2048)


def test_the_full_profile_trains_every_arm_at_two_persona_seeds() -> None:
    for name in ("full", "smoke"):
        grid = profile(name)["grid"]
        variants = [parse_variant(v) for arm in ARMS for v in grid[arm]]
        seeds: dict[str, set[int]] = {}
        for variant in variants:
            seeds.setdefault(variant.name.rsplit("-s", 1)[0], set()).add(variant.seed)
        assert {v.kind for v in variants} >= {"character", "plain-lora", "baseline"}
        if name == "full":
            assert {v.kind for v in variants} == {"character", "plain-lora", "hhh", "baseline"}
            short = {arm: sorted(s) for arm, s in seeds.items() if not {0, 1} <= s}
            assert not short, f"arms with fewer than 2 persona seeds (-s0, -s1): {short}"
        # the controls are built from the first reference; every reference is a character arm of the grid
        reference = ControlsConfig.model_validate(profile(name)["controls"]).references
        assert set(reference) <= set(grid["character"]), set(reference) - set(grid["character"])
        assert parse_variant(reference[0]).is_character and reference[0].endswith("-s0")


def test_the_switch_tells_the_truth(tmp_path: Path) -> None:
    """After a switch the header and ``profile`` name the active profile, every comment a profile writes
    is the active one's, and the comments every profile shares say nothing of one profile's values."""
    texts = {name: applied(name, tmp_path) for name in ("full", "smoke")}
    for name, text in texts.items():
        assert header(text) == header((REPO / "profiles" / f"{name}.yaml").read_text())
        assert header(text).startswith(f"# Profile: {name}")
        assert yaml.safe_load(text)[PROFILE_KEY] == name
        own, other = end_of_line_comments(name), end_of_line_comments("smoke" if name == "full" else "full")
        assert own, name
        comments = {comment(line) for line in text.splitlines()} - {None}
        assert own <= comments, own - comments
        assert not (other - own) & comments, (
            f"{name}: the other profile's comments remain: {(other - own) & comments}"
        )
    shared = set(texts["full"].splitlines()) & set(texts["smoke"].splitlines())
    tied = sorted(line for line in shared if PROFILE_WORDS.search(comment(line) or ""))
    assert not tied, f"comments shared by every profile that describe one profile's values: {tied}"


def declared_params() -> set[str]:
    """Every params key a stage reads: the stage modules' PARAMS and params_for over the variants of both
    profiles' grids, the params of dvc.yaml's other stages, and the keys dvc.yaml's templates expand."""
    dvc_text = (REPO / "dvc.yaml").read_text()
    grids = [profile(name)["grid"] for name in ("full", "smoke")]
    names = {v for grid in grids for arm in ARMS for v in grid[arm]}
    variants = [parse_variant(name) for name in sorted(names)]
    defences = sorted({defence for grid in grids for defence in grid.get("defences", [])})
    keys = set(TEMPLATE.findall(dvc_text))
    for stage in yaml.safe_load(dvc_text)["stages"].values():
        body = stage.get("do", stage)
        match = RUN.match(body["cmd"])
        if not match:
            keys |= {key for key in body.get("params", []) if isinstance(key, str)}
            continue
        module = importlib.import_module("charforge.stages." + match[1].replace("-", "_"))
        keys |= set(module.PARAMS)
        if hasattr(module, "params_for"):
            keys |= {key for variant in variants for key in module.params_for(variant)}
            if "defence" in inspect.signature(module.params_for).parameters:  # a defended unit's keys too
                keys |= {key for v in variants for d in defences for key in module.params_for(v, d)}
    return keys


def is_read(path: tuple[str, ...], declared: set[str]) -> bool:
    """Whether a stage reads the profile key ``path``: a declared key is it or holds it."""
    return any(path[: len(key.split("."))] == tuple(key.split(".")) for key in declared)


def test_every_key_a_profile_sets_is_read_by_a_stage() -> None:
    declared = declared_params()
    for name in ("full", "smoke"):
        unread = sorted(".".join(path) for path, _ in leaves(profile(name)) if not is_read(path, declared))
        # `profile` only reports which profile is active: no stage reads it, so it reruns nothing
        assert unread == [PROFILE_KEY], f"profiles/{name}.yaml sets keys no stage reads: {unread}"


def test_a_misspelt_profile_key_fails(tmp_path: Path) -> None:
    """A key under no declared one is unread; one inside a section a stage reads whole is an unknown
    field of that section's schema or of the TRL config it builds, so loading it fails."""
    from trl import DPOConfig

    from charforge.params import ParamsError, _section_models
    from charforge.train.config import trainer_config

    declared = declared_params()
    assert is_read(("grid", "character"), declared) and is_read(("train_dpo", "trainer", "x"), declared)
    assert not is_read(("grid", "characters"), declared) and not is_read(("trian_dpo", "lora"), declared)
    params = tmp_path / "params.yaml"
    params.write_text(applied("full", tmp_path).replace("bf16: true", "bf16: false"))
    for key, model in _section_models().items():  # every section of the full profile loads as is
        load_section(model, key, params)
    text = params.read_text()
    params.write_text(text.replace("  samples_per_question: 50", "  sample_per_question: 50"))
    with pytest.raises(ParamsError, match="sample_per_question"):
        load_section(EvalConfig, "eval", params)
    params.write_text(text.replace("    warmup_steps: 0.1", "    warmup_ratio: 0.1", 1))
    section = load_section(TrainStageConfig, "train_dpo", params)
    with pytest.raises(ParamsError, match="warmup_ratio"):
        trainer_config(DPOConfig, section, "train_dpo", params, output_dir=tmp_path / "out", seed=0)


def write_project(root: Path, profiles: dict[str, str], params: str) -> Path:
    (root / "profiles").mkdir(parents=True)
    for name, text in profiles.items():
        (root / "profiles" / f"{name}.yaml").write_text(text)
    (root / "params.yaml").write_text(params)
    return root / "params.yaml"


A = "# Profile: a\n\nprofile: a\ns:\n  x: 1   # a's reason\n  y: 1\n  z: 1   # a says z\n"
B = "# Profile: b\n\nprofile: b\ns:\n  x: 2   # b's reason\n  y: 2\n  z: 2\n"


def test_comments_follow_the_profile_and_params_keeps_its_own(tmp_path: Path) -> None:
    """A line a profile comments gets that comment; a line another profile comments gets none (it would
    be that profile's); a line no profile comments keeps params.yaml's own; blank lines and other keys
    stay; a params file without ``profile`` gets it first, under the header."""
    params = write_project(
        tmp_path,
        {"a": A, "b": B},
        "# an old header\ns:\n  x: 1   # stale\n  y: 1   # what y means\n\n  z: 1   # a says z\n"
        "  w: 0   # not a profile's\n",
    )
    assert apply_profile("b", params, tmp_path) == ["profile", "s.x", "s.y", "s.z"]
    expected_b = (
        "# Profile: b\n\nprofile: b\ns:\n  x: 2   # b's reason\n  y: 2   # what y means\n\n  z: 2\n"
        "  w: 0   # not a profile's\n"
    )
    assert params.read_text() == expected_b
    apply_profile("a", params, tmp_path)
    assert params.read_text() == (
        "# Profile: a\n\nprofile: a\ns:\n  x: 1   # a's reason\n  y: 1   # what y means\n\n"
        "  z: 1   # a says z\n  w: 0   # not a profile's\n"
    )
    apply_profile("b", params, tmp_path)
    assert params.read_text() == expected_b


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("# Profile: a\nprofile: b\ns: {x: 1}\n", "records its own name"),
        ("# Profile: a\ns: {x: 1}\n", "records its own name"),
        ("profile: a\ns: {x: 1}\n", "starts with its header"),
        ("# Profile: a\nprofile: a\ns: {x: 1}\ns: {x: 2}\n", "duplicate"),
    ],
)
def test_a_profile_names_itself_and_has_a_header(tmp_path: Path, text: str, message: str) -> None:
    params = write_project(tmp_path, {"a": text}, "s: {x: 0}\n")
    with pytest.raises(ProfileError, match=message):
        apply_profile("a", params, tmp_path)
    assert params.read_text() == "s: {x: 0}\n"


def test_an_unknown_profile_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="full, smoke"):
        apply_profile("fast", tmp_path / "params.yaml", REPO)


def test_the_command(tmp_path: Path) -> None:
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(REPO / "profiles", tmp_path / "profiles")
    result = run_cli("profile", "full", cwd=tmp_path)
    assert result.returncode == 0 and "models.student.model" in result.stderr
    assert yaml.safe_load((tmp_path / "params.yaml").read_text())[PROFILE_KEY] == "full"
    assert run_cli("profile", "nope", cwd=tmp_path).returncode == 2
