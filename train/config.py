"""From a ``params.yaml`` training section to TRL's and PEFT's own config objects.

There is no second config system: ``trainer`` keys are the stage's TRL config fields (``DPOConfig``,
``SFTConfig``), ``lora`` keys are ``peft.LoraConfig`` fields. This module only adds what charforge
owns — the output folder, the variant's seed, logging and no checkpoints — and turns a bad key or
value into a ParamsError located at its line of params.yaml.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from charforge.params import params_error
from charforge.schemas.params import TrainStageConfig

if TYPE_CHECKING:
    from peft import LoraConfig
    from transformers import TrainingArguments

Args = TypeVar("Args", bound="TrainingArguments")

# Set by charforge for every run; a value in params.yaml would be silently overridden, so it is an error.
MANAGED_TRAINER_KEYS: dict[str, str] = {
    "output_dir": "the stage writes models/<variant>/<adapter>/",
    "seed": "the seed is the variant's (…-s<seed>)",
    "data_seed": "the seed is the variant's (…-s<seed>)",
    "report_to": "metrics go to metrics/<variant>/<stage>.json",
    "save_strategy": "charforge saves the final adapter only, atomically",
    "disable_tqdm": "charforge shows a rich progress bar",
    "push_to_hub": "publishing is `charforge publish`",
}
MANAGED_LORA_KEYS: dict[str, str] = {"task_type": "always CAUSAL_LM"}


def resolved_bf16(on_cpu: bool = False) -> dict[str, bool]:
    """What ``bf16: auto`` sets: bf16 mixed precision where the device computes bf16 natively (a GPU
    that supports it; a CPU with avx512_bf16 or AMX, where transformers also needs ``use_cpu``), fp32
    elsewhere. Autocast leaves the weights and the LoRA's optimizer state in fp32; on such a CPU a
    training step of the embedded model takes about 0.6x the fp32 time (bench/README). The trained
    model keeps accelerate's autocast wrapper, so the held-out losses measured after training (before
    and after EM alike, on the same model) are computed under it too."""
    import torch

    from charforge.generators.llm import cpu_has_native_bf16

    if torch.cuda.is_available() and not on_cpu:  # `use_cpu: true` trains on the CPU even beside a GPU
        return {"bf16": torch.cuda.is_bf16_supported()}
    return {"bf16": True, "use_cpu": True} if cpu_has_native_bf16() else {"bf16": False}


def trainer_config(
    config_class: type[Args],
    section: TrainStageConfig,
    stage_key: str,
    params: Path,
    *,
    output_dir: Path,
    seed: int,
) -> Args:
    """``config_class`` (e.g. ``trl.DPOConfig``) built from ``section.trainer`` plus charforge's settings;
    ``bf16: auto`` resolved by ``resolved_bf16`` (the run's metrics record the resolved value)."""
    _reject_managed(section.trainer, MANAGED_TRAINER_KEYS, (stage_key, "trainer"), params)
    trainer = dict(section.trainer)
    if trainer.get("bf16") == "auto":
        trainer.update(resolved_bf16(on_cpu=bool(trainer.get("use_cpu"))))
    kwargs: dict[str, Any] = {
        **trainer,
        "output_dir": str(output_dir),
        "seed": seed,
        "data_seed": seed,
        "report_to": "none",
        "save_strategy": "no",
        "disable_tqdm": True,  # replaced by TRL's RichProgressCallback
        "logging_steps": section.trainer.get("logging_steps", 1),
    }
    return _construct(config_class, kwargs, (stage_key, "trainer"), params)


def lora_config(section: TrainStageConfig, stage_key: str, params: Path) -> LoraConfig:
    """``peft.LoraConfig`` from ``section.lora`` (always a causal-LM task)."""
    from peft import LoraConfig

    _reject_managed(section.lora, MANAGED_LORA_KEYS, (stage_key, "lora"), params)
    return _construct(LoraConfig, {**section.lora, "task_type": "CAUSAL_LM"}, (stage_key, "lora"), params)


def _reject_managed(
    values: dict[str, Any], managed: dict[str, str], loc: tuple[str, ...], params: Path
) -> None:
    for key in values:
        if key in managed:
            raise params_error(params, (*loc, key), f"set by charforge, remove it ({managed[key]})")


def _construct(config_class: type, kwargs: dict[str, Any], loc: tuple[str, ...], params: Path) -> Any:
    import dataclasses

    known = {field.name for field in dataclasses.fields(config_class)}
    for key in kwargs:
        if key not in known:
            raise params_error(params, (*loc, key), f"not a field of {config_class.__name__}")
    try:
        return config_class(**kwargs)
    except (TypeError, ValueError) as error:
        # The config classes check values in __post_init__; their message names the field.
        hint = ""
        if "bf16" in str(error):  # TRL's configs default to bf16, which a CPU-only machine lacks
            hint = " (TRL defaults to bf16: set `bf16: auto` or `false` here on a machine without a GPU)"
        raise params_error(
            params, loc, f"{config_class.__name__} rejects these settings: {error}{hint}"
        ) from None
