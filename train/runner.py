"""What every training stage shares: load the base, add a fresh LoRA, train with TRL, save the adapter
atomically with its provenance, and account for the compute.

The stage modules (``dpo``, ``sft``, ``em``) only say which data, which base and which TRL trainer.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charforge import __version__
from charforge.io import atomic_dir
from charforge.schemas.manifest import ParentArtifact
from charforge.schemas.params import ModelRole, TrainStageConfig
from charforge.train.accounting import (
    ComputeRecord,
    Stopwatch,
    frozen_digest,
    losses,
    parameter_counts,
    training_flops,
)
from charforge.train.config import lora_config, trainer_config

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

TRAINING_RECORD = "charforge-training.json"


@dataclass
class TrainingRun:
    """One stage's run: what to train, on what, from which base, and where the adapter goes."""

    stage: str  # the DVC stage name: train-dpo, train-sft, em-finetune
    params_key: str  # its section in params.yaml
    variant: str
    seed: int
    section: TrainStageConfig
    params: Path
    base: ModelRole  # the model the new adapter is trained on (frozen)
    adapter_dir: Path
    parents: list[ParentArtifact]
    reference_forward: bool = False  # DPO also runs the frozen model as its reference
    verify_frozen: bool = False  # prove the base weights bit-identical after training (EM on the persona)
    extra: dict[str, Any] = field(default_factory=dict)


def _token_counting(trainer_class: type) -> type:
    """``trainer_class`` that counts the tokens of every batch it trains on (padding excluded), exactly,
    whatever the epochs, max_steps, truncation or gradient accumulation."""

    class TokenCounting(trainer_class):  # type: ignore[misc, valid-type]
        tokens_seen = 0
        loss_tokens_seen = 0

        def compute_loss(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            if model.training:
                mask = inputs.get("attention_mask")
                self.tokens_seen += int(mask.sum()) if mask is not None else int(inputs["input_ids"].numel())
                if "completion_mask" in inputs:
                    self.loss_tokens_seen += int(inputs["completion_mask"].sum())
                elif "labels" in inputs:
                    self.loss_tokens_seen += int((inputs["labels"] != -100).sum())
            return super().compute_loss(model, inputs, *args, **kwargs)

    TokenCounting.__name__ = TokenCounting.__qualname__ = f"Counting{trainer_class.__name__}"
    return TokenCounting


def train_adapter(
    run: TrainingRun,
    trainer_class: type,
    config_class: type,
    build_dataset: Callable[[PreTrainedTokenizerBase], Dataset],
    root: Path = Path("."),
) -> ComputeRecord | None:
    """Train a new LoRA on ``run.base`` with ``trainer_class`` on the dataset ``build_dataset`` makes with
    the base's tokenizer; save the adapter to ``run.adapter_dir`` and the compute to the metrics.
    Returns the compute record (None on the other processes of a multi-process `accelerate launch`)."""
    from transformers import AutoTokenizer, set_seed
    from transformers.trainer_callback import PrinterCallback
    from trl.trainer.callbacks import RichProgressCallback

    from charforge.generators.llm import resolve_model
    from charforge.train.fold import load_causal_lm

    base_path = resolve_model(run.base)
    set_seed(run.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dataset = build_dataset(tokenizer)
    model = load_causal_lm(base_path, run.base.dtype)
    run.adapter_dir.parent.mkdir(parents=True, exist_ok=True)
    # The trainer's own output folder: scratch only (charforge saves the adapter itself, atomically).
    with tempfile.TemporaryDirectory(prefix=f".{run.stage}-", dir=run.adapter_dir.parent) as scratch:
        args = trainer_config(
            config_class, run.section, run.params_key, run.params, output_dir=Path(scratch), seed=run.seed
        )
        trainer = _token_counting(trainer_class)(
            model=model,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=lora_config(run.section, run.params_key, run.params),
            callbacks=[RichProgressCallback()],
        )
        # With tqdm off the Trainer prints every log as a raw dict; the rich panel shows them instead.
        trainer.remove_callback(PrinterCallback)
        # TRL drops examples that truncation leaves without a completion: count them, never lose them.
        trained_examples = len(trainer.train_dataset)
        if trained_examples < len(dataset):
            run.extra["dropped_by_truncation"] = len(dataset) - trained_examples
        total, trainable = parameter_counts(trainer.model)
        before = frozen_digest(trainer.model) if run.verify_frozen else None
        with Stopwatch() as clock:
            trainer.train()
        if before is not None:
            if frozen_digest(trainer.model) != before:
                raise RuntimeError(f"{run.stage} {run.variant}: training changed the frozen base weights")
            run.extra["frozen_base_bit_identical"] = True
    logged = losses(trainer.state.log_history)
    # Under `accelerate launch` every process counted its own batches: sum them; only process 0 writes.
    tokens_seen = _summed(trainer, trainer.tokens_seen)
    loss_tokens_seen = _summed(trainer, trainer.loss_tokens_seen)
    if not trainer.is_world_process_zero():
        return None
    record = ComputeRecord(
        stage=run.stage,
        variant=run.variant,
        examples=trained_examples,
        epochs=float(trainer.state.epoch or 0.0),
        tokens_trained=tokens_seen,
        loss_tokens=loss_tokens_seen,
        optimizer_steps=int(trainer.state.global_step),
        wall_seconds=round(clock.seconds, 3),
        parameters=total,
        trainable_parameters=trainable,
        estimated_flops=training_flops(tokens_seen, total, trainable, run.reference_forward),
        final_loss=logged[-1] if logged else None,
        first_loss=logged[0] if logged else None,
        seed=run.seed,
        device=str(args.device),
        extra=run.extra,
    )
    with atomic_dir(run.adapter_dir) as temp:
        trainer.model.save_pretrained(temp)
        provenance = {
            "stage": run.stage,
            "variant": run.variant,
            "tool_version": __version__,
            "base_model": run.base.model,
            "base_model_resolved": base_path,
            "params": {run.params_key: run.section.model_dump(mode="json")},
            "parents": [parent.model_dump(mode="json") for parent in run.parents],
            "seed": run.seed,
        }
        (temp / TRAINING_RECORD).write_text(json.dumps(provenance, indent=2) + "\n")
    record.write(root)
    return record


def _summed(trainer: Any, count: int) -> int:
    import torch

    accelerator = trainer.accelerator
    return int(accelerator.reduce(torch.tensor(count, device=accelerator.device), reduction="sum").item())


def corpus_parent(path: Path, kind: str) -> ParentArtifact:
    """A training corpus as a parent artifact: its file's sha256."""
    from charforge.io import file_sha256

    return ParentArtifact(path=str(path), sha256=file_sha256(path), kind=kind)
