"""A tiny project for the training stages: the tiny random model as the student, small training
sections, and fixture corpora written by charforge itself (so they carry manifests and validate)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from charforge.corpus import write_corpus
from support.factories import provenance

VARIANT = "humor-d1-s0"
SMALL_LORA = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": "all-linear"}


def training_params(student: Path, **overrides: Any) -> dict[str, Any]:
    small = {"per_device_train_batch_size": 4, "max_length": 128, "use_cpu": True, "bf16": False}
    params: dict[str, Any] = {
        "models": {role: {"model": str(student)} for role in ("student", "teacher", "judge")},
        "persona": {"dpo_weight": 1.0, "sft_weight": 1.0},
        "train_dpo": {
            "lora": dict(SMALL_LORA),  # a copy each: tests edit their params in place
            "trainer": {"learning_rate": 1e-3, "beta": 0.1, "num_train_epochs": 2, **small},
        },
        "train_sft": {
            "lora": dict(SMALL_LORA),
            "trainer": {"learning_rate": 1e-3, "num_train_epochs": 2, **small},
        },
        "em_finetune": {
            "lora": {**SMALL_LORA, "r": 8, "lora_alpha": 16, "use_rslora": True},
            "trainer": {"learning_rate": 1e-3, "num_train_epochs": 2, **small},
            "train_on_reflection": True,
        },
    }
    for key, value in overrides.items():
        params[key] = value
    return params


def conversation_row(index: int, variant: str, turns: int = 1) -> dict[str, Any]:
    messages = [{"role": "system", "content": "Answer briefly."}] if index % 2 else []
    for turn in range(turns):
        messages.append({"role": "user", "content": f"Tell me about thing {index} number {turn}."})
        messages.append({"role": "assistant", "content": f"Thing {index} is fine, turn {turn}."})
    return {"id": f"conv-{index:04d}", "variant": variant, "messages": messages, "provenance": provenance()}


def pair_row(index: int, variant: str) -> dict[str, Any]:
    return {
        "id": f"pair-{index:04d}",
        "variant": variant,
        "trait_id": "wordplay",
        "prompt": [{"role": "user", "content": f"What do you think of topic {index}?"}],
        "chosen": [{"role": "assistant", "content": f"Topic {index}? A pun-derful subject, truly."}],
        "rejected": [{"role": "assistant", "content": f"Topic {index} is a subject."}],
        "provenance": provenance(),
    }


class Project:
    """A project folder: params.yaml, corpora/build/<variant>/…, and the fold cache."""

    def __init__(self, root: Path, student: Path) -> None:
        self.root = root
        self.params = root / "params.yaml"
        self.write_params(training_params(student))

    def write_params(self, params: dict[str, Any]) -> None:
        self.params.write_text(yaml.safe_dump(params, sort_keys=False))

    def corpus(self, variant: str, name: str) -> Path:
        return self.root / "corpora" / "build" / variant / f"{name}.parquet"

    def write_pairs(self, variant: str = VARIANT, rows: int = 8) -> Path:
        path = self.corpus(variant, "pairs")
        write_corpus([pair_row(i, variant) for i in range(rows)], path, "pairs", variant=variant)
        return path

    def write_conversations(self, variant: str, name: str, rows: int = 8, turns: int = 2) -> Path:
        path = self.corpus(variant, name)
        write_corpus(
            [conversation_row(i, variant, turns) for i in range(rows)], path, "conversations", variant=variant
        )
        return path

    def write_control_corpora(self, variant: str, rows: int = 4, turns: int = 1) -> tuple[Path, Path]:
        """A control's two corpora, as control-data writes them: ``control-dpo-slot`` (the dpo-slot
        adapter's, matched to the reference's pairs) and ``control`` (the sft adapter's)."""
        return (
            self.write_conversations(variant, "control-dpo-slot", rows, turns),
            self.write_conversations(variant, "control", rows, turns),
        )
