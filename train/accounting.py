"""Compute accounting for every training run, so controls can be shown matched (docs/design.md §1, H2).

Each run writes ``metrics/<variant>/<stage>.json`` (stage = its DVC stage name): examples, tokens
trained, optimizer steps, wall seconds, estimated FLOPs and the final loss.

FLOPs are estimated per token processed, with N the model's parameters: a forward pass costs 2N; the
backward pass costs 2N for the gradients with respect to activations (needed through every layer,
frozen or not) plus 2N_trainable for the weight gradients. A LoRA step is therefore about
4N + 2N_trainable per token (6N for full fine-tuning), and DPO adds a 2N reference forward per token.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from charforge.io import atomic_write_text
from charforge.paths import metrics_path


def training_flops(tokens: int, parameters: int, trainable: int, reference_forward: bool) -> float:
    """Estimated FLOPs of training on ``tokens`` tokens (see the module docstring)."""
    per_token = 4 * parameters + 2 * trainable + (2 * parameters if reference_forward else 0)
    return float(tokens) * per_token


@dataclass
class ComputeRecord:
    """What one training run cost. ``tokens_trained`` counts every token the model processed (prompt and
    answer, chosen and rejected, summed over epochs); ``loss_tokens`` those that carried a label."""

    stage: str
    variant: str
    examples: int
    epochs: float
    tokens_trained: int
    loss_tokens: int
    optimizer_steps: int
    wall_seconds: float
    parameters: int
    trainable_parameters: int
    estimated_flops: float
    final_loss: float | None
    first_loss: float | None
    seed: int
    device: str
    extra: dict[str, Any] = field(default_factory=dict)

    def write(self, root: Path = Path(".")) -> Path:
        path = metrics_path(root, self.variant, self.stage)
        atomic_write_text(path, json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
        return path


def losses(log_history: list[dict[str, Any]]) -> list[float]:
    """The training losses the trainer logged, in order."""
    return [float(entry["loss"]) for entry in log_history if "loss" in entry]


def parameter_counts(model: Any) -> tuple[int, int]:
    """(all parameters, trainable parameters) of a (PEFT) model."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def frozen_digest(model: Any, trainable: bool = False) -> str:
    """sha256 over every frozen parameter's bytes (name, dtype, shape and data): equal digests before
    and after training prove the frozen weights bit-identical. ``trainable``: over the trainable ones
    instead (equal digests: training moved nothing)."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad is not trainable:
            continue
        data = parameter.detach().cpu().contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)}".encode())
        digest.update(data.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class Stopwatch:
    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
