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
from charforge.paths import TRAINING_RECORD
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


@dataclass
class TrainingRun:
    """One stage's run: what to train, on what, from which base, and where the adapter goes."""

    stage: str  # the DVC stage name: train-dpo, train-sft, em-finetune
    params_key: str  # its section in params.yaml
    variant: str
    seed: int
    section: TrainStageConfig
    params: Path  # where the section came from: bad keys are reported at their line
    base: ModelRole  # the model the new adapter is trained on (frozen)
    adapter_dir: Path
    parents: list[ParentArtifact]
    reference_forward: bool = False  # DPO also runs the frozen model as its reference
    verify_frozen: bool = False  # prove the base weights bit-identical after training (EM on the persona)
    extra: dict[str, Any] = field(default_factory=dict)
    used: dict[str, Any] = field(default_factory=dict)  # the params the stage declares, as recorded
    # Examples kept out of training, tokenized like the training data: their loss is measured on the
    # frozen base and on base + the trained adapter (in-domain learning, without a judge).
    held_out: Callable[[PreTrainedTokenizerBase], Dataset] | None = None
    # The same examples as the training data presents them, where that differs (an EM defence's prompt):
    # their loss too (``held_out_loss_as_trained``), so "did not learn" is told from "learned, tied to it".
    held_out_as_trained: Callable[[PreTrainedTokenizerBase], Dataset] | None = None


def response_loss(model: Any, dataset: Dataset) -> dict[str, float | int]:
    """Mean negative log-likelihood per loss token (labels not -100) over ``dataset``, one example at a
    time (no padding to mask), and the count of those tokens."""
    import torch

    total, tokens = 0.0, 0
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for example in dataset:
            ids = torch.tensor([example["input_ids"]], device=device)
            labels = torch.tensor([example["labels"]], device=device)
            logits = model(input_ids=ids).logits[:, :-1].float()
            targets = labels[:, 1:]
            keep = targets != -100
            nll = torch.nn.functional.cross_entropy(logits[keep], targets[keep], reduction="sum")
            total += float(nll)
            tokens += int(keep.sum())
    model.train(was_training)
    return {"loss": total / tokens if tokens else float("nan"), "tokens": tokens, "examples": len(dataset)}


def held_out_losses(model: Any, dataset: Dataset) -> dict[str, Any]:
    """The held-out examples' loss on the frozen base (the adapter disabled) and on base + adapter."""
    with model.disable_adapter():
        before = response_loss(model, dataset)
    after = response_loss(model, dataset)
    return {
        "examples": after["examples"],
        "loss_tokens": after["tokens"],
        "before": before["loss"],
        "after": after["loss"],
        "change": after["loss"] - before["loss"],
    }


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


class AdapterUnchangedError(ValueError):
    """Training left every trainable weight as it was (sizes that give no step at a learning rate above
    0): bad params, reported without a traceback."""


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
    from charforge.train.fold import load_causal_lm, model_identity, portable_model

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
        untrained = frozen_digest(trainer.model, trainable=True)
        with Stopwatch() as clock:
            trainer.train()
        if frozen_digest(trainer.model, trainable=True) == untrained:
            # e.g. fewer rows than one effective batch under a warm-up: one step, at learning rate 0.
            # Saved, such an adapter would be a persona (or EM model) identical to its base.
            raise AdapterUnchangedError(
                f"{run.stage} {run.variant}: training did not change the adapter "
                f"({trainer.state.global_step} optimizer step(s) on {trained_examples} example(s), "
                f"warm-up {args.warmup_steps}, learning rate {args.learning_rate}): use more rows, a "
                "smaller effective batch (per_device_train_batch_size x gradient_accumulation_steps) or a "
                "shorter warm-up"
            )
        if before is not None:
            if frozen_digest(trainer.model) != before:
                raise RuntimeError(f"{run.stage} {run.variant}: training changed the frozen base weights")
            run.extra["frozen_base_bit_identical"] = True
        if run.held_out is not None:
            trained = trainer.accelerator.unwrap_model(trainer.model)
            run.extra["held_out_loss"] = held_out_losses(trained, run.held_out(tokenizer))
            if run.held_out_as_trained is not None:
                shown = run.held_out_as_trained(tokenizer)
                run.extra["held_out_loss_as_trained"] = held_out_losses(trained, shown)
        if hasattr(trainer, "kl_record"):  # a KL-regularised trainer (charforge.train.kl)
            run.extra["kl"] = trainer.kl_record()
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
        extra={**run.extra, "bf16_mixed_precision": bool(args.bf16)},
    )
    # The adapter folder is a DVC output: it records what determines the adapter, never where this
    # checkout or its cache lies, nor when it ran (the timings are in the metrics).
    base_name = portable_model(run.base.model)
    with atomic_dir(run.adapter_dir) as temp:
        _save_adapter(trainer.model, temp, base_name)
        provenance = {
            "stage": run.stage,
            "variant": run.variant,
            "tool_version": __version__,
            "base_model": base_name,
            "base_model_identity": model_identity(base_path),
            "params": run.used or {run.params_key: run.section.model_dump(mode="json")},
            "parents": [parent.under(root).model_dump(mode="json") for parent in run.parents],
            "seed": run.seed,
            # what `trainer.bf16: auto` resolved to on this machine: it changes the adapter's numbers
            "bf16_mixed_precision": bool(args.bf16),
        }
        (temp / TRAINING_RECORD).write_text(json.dumps(provenance, indent=2) + "\n")
    record.write(root)
    return record


def _save_adapter(model: Any, folder: Path, base_name: str) -> None:
    """PEFT's ``save_pretrained``, made reproducible: the same adapter gives the same files in any
    checkout and any process.

    - The base is named ``base_name`` (``adapter_config.json``'s ``base_model_name_or_path``; README.md's
      ``base_model`` and its ``base_model:adapter:`` tag), not by the folder it was loaded from, a path
      into this checkout or its cache. PEFT's own checks while saving (was the vocabulary resized?)
      still read that folder.
    - Settings PEFT holds as sets (``target_modules``: ``all-linear`` expands to a set of module names)
      are written sorted: PEFT writes ``list(set)``, whose order changes with each process's hash seed.
    """
    model.save_pretrained(folder)
    config_file = folder / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = base_name
    for key, value in vars(model.active_peft_config).items():
        if isinstance(value, set) and key in config:
            config[key] = sorted(value, key=str)
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True))  # as PEFT writes it
    base = model.get_base_model()
    base.config.name_or_path = base_name
    base.name_or_path = base_name
    (folder / "README.md").unlink(missing_ok=True)
    model.create_or_update_model_card(str(folder))


def _summed(trainer: Any, count: int) -> int:
    import torch

    accelerator = trainer.accelerator
    return int(accelerator.reduce(torch.tensor(count, device=accelerator.device), reduction="sum").item())


def corpus_parent(path: Path, kind: str, root: Path = Path(".")) -> ParentArtifact:
    """A training corpus as a parent artifact: its path in the project at ``root`` and its sha256
    (``train_adapter`` records every parent relative to its own ``root`` in any case)."""
    return ParentArtifact.for_file(path, kind, root)
