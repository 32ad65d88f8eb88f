"""Training sections of params.yaml go straight into TRL's and PEFT's config classes; mistakes are
reported at their line, and the settings charforge owns cannot be overridden silently."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from trl import DPOConfig, SFTConfig

from charforge.params import ParamsError, load_section
from charforge.schemas.params import EmFinetuneConfig, TrainStageConfig
from charforge.train.config import lora_config, trainer_config

PARAMS = """\
train_sft:
  lora: {r: 8, lora_alpha: 16, target_modules: all-linear}
  trainer:
    learning_rate: 2.0e-4
    num_train_epochs: 1
    bf16: false
    {extra}
"""


def section(tmp_path: Path, extra: str = "max_length: 64") -> tuple[TrainStageConfig, Path]:
    path = tmp_path / "params.yaml"
    path.write_text(PARAMS.replace("{extra}", extra))
    return load_section(TrainStageConfig, "train_sft", path), path


def test_values_reach_the_trl_config_and_charforge_sets_its_own(tmp_path: Path) -> None:
    config, path = section(tmp_path)
    args = trainer_config(SFTConfig, config, "train_sft", path, output_dir=tmp_path / "out", seed=7)
    assert (args.learning_rate, args.num_train_epochs, args.max_length) == (2e-4, 1, 64)
    assert (args.seed, args.data_seed, args.save_strategy, args.report_to) == (7, 7, "no", [])
    lora = lora_config(config, "train_sft", path)
    assert (lora.r, lora.lora_alpha, lora.target_modules, lora.task_type) == (
        8,
        16,
        "all-linear",
        "CAUSAL_LM",
    )


def test_the_shipped_params_build_every_stage_config(tmp_path: Path) -> None:
    params = Path(__file__).resolve().parents[2] / "params.yaml"
    for key, model, config_class in [
        ("train_dpo", TrainStageConfig, DPOConfig),
        ("train_sft", TrainStageConfig, SFTConfig),
        ("em_finetune", EmFinetuneConfig, SFTConfig),
    ]:
        stage = load_section(model, key, params)
        trainer_config(config_class, stage, key, params, output_dir=tmp_path, seed=0)
        lora_config(stage, key, params)
    em = load_section(EmFinetuneConfig, "em_finetune", params)
    assert (em.lora["r"], em.lora["lora_alpha"], em.lora["use_rslora"]) == (32, 64, True)


@pytest.mark.parametrize(
    ("extra", "field", "message"),
    [
        ("learning_rat: 0.1", "train_sft.trainer.learning_rat", "not a field of SFTConfig"),
        ("seed: 3", "train_sft.trainer.seed", "set by charforge"),
        ("output_dir: elsewhere", "train_sft.trainer.output_dir", "set by charforge"),
    ],
)
def test_bad_trainer_keys_are_located(tmp_path: Path, extra: str, field: str, message: str) -> None:
    config, path = section(tmp_path, extra)
    with pytest.raises(ParamsError) as caught:
        trainer_config(SFTConfig, config, "train_sft", path, output_dir=tmp_path, seed=0)
    (problem,) = caught.value.problems
    assert (problem.file, problem.where, problem.field) == (str(path), "7", field)
    assert message in problem.message


def test_bad_values_are_reported_by_the_config_class(tmp_path: Path) -> None:
    config, path = section(tmp_path, "lr_scheduler_type: sideways")
    with pytest.raises(ParamsError, match=r"train_sft\.trainer: SFTConfig rejects"):
        trainer_config(SFTConfig, config, "train_sft", path, output_dir=tmp_path, seed=0)


def test_bf16_on_a_machine_without_gpu_gets_a_hint(tmp_path: Path) -> None:
    import torch

    path = tmp_path / "params.yaml"
    path.write_text(PARAMS.replace("bf16: false", "bf16: true").replace("{extra}", ""))
    config = load_section(TrainStageConfig, "train_sft", path)

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ParamsError, match="set `bf16: auto` or `false` here on a machine without a GPU"):
        trainer_config(SFTConfig, config, "train_sft", path, output_dir=tmp_path, seed=0)


@pytest.mark.parametrize("native_bf16", [True, False])
def test_bf16_auto_autocasts_only_where_the_cpu_has_native_bf16(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, native_bf16: bool
) -> None:
    import torch

    from charforge.generators import llm

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.setattr(llm, "cpu_has_native_bf16", lambda: native_bf16)
    path = tmp_path / "params.yaml"
    path.write_text(PARAMS.replace("bf16: false", "bf16: auto").replace("{extra}", ""))
    config = load_section(TrainStageConfig, "train_sft", path)
    args = trainer_config(SFTConfig, config, "train_sft", path, output_dir=tmp_path, seed=0)
    assert (args.bf16, args.use_cpu) == (native_bf16, native_bf16)


def test_bad_lora_keys_are_located(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    data = yaml.safe_load(PARAMS.replace("{extra}", ""))
    data["train_sft"]["lora"]["rank"] = 8
    path.write_text(yaml.safe_dump(data))
    config = load_section(TrainStageConfig, "train_sft", path)
    with pytest.raises(ParamsError, match=r"train_sft.lora.rank: not a field of LoraConfig"):
        lora_config(config, "train_sft", path)


def test_a_learning_rate_set_with_dvc_exp_run_reaches_trl_as_a_number(tmp_path: Path) -> None:
    from dvc.utils.hydra import apply_overrides

    path = tmp_path / "params.yaml"
    path.write_text((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    # what `dvc exp run -S train_dpo.trainer.learning_rate=1e-5` does to the file (DVC writes `1e-05`,
    # which YAML 1.1 readers take for a string)
    apply_overrides(path, ["train_dpo.trainer.learning_rate=1e-5", "em_finetune.trainer.learning_rate=3e4"])
    assert "learning_rate: 1e-05" in path.read_text()
    config = load_section(TrainStageConfig, "train_dpo", path)
    args = trainer_config(DPOConfig, config, "train_dpo", path, output_dir=tmp_path / "out", seed=0)
    assert args.learning_rate == 1e-5 and isinstance(args.learning_rate, float)
    em = load_section(EmFinetuneConfig, "em_finetune", path)
    assert em.trainer["learning_rate"] == 3e4
