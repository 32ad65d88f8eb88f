"""Stage `train-dpo-slot`: a ``plain-lora`` / ``hhh`` control's first adapter, in the character arm's
DPO slot (docs/design.md §1 H2, §2).

A control is compared with a character arm that carries two adapters (DPO, then SFT on the DPO-folded
student); it carries two as well, so the arms differ in their data only. This one is an SFT LoRA on the
control's ``control-dpo-slot.parquet`` (matched to the reference's pairs), trained on the plain student
with the character DPO adapter's settings: its LoRA (``train_dpo.lora``: rank, alpha, target modules)
and its optimisation (``train_dpo.trainer``: every ``TrainingArguments`` field it sets — learning rate,
schedule, epochs, batch, precision — and ``max_length``), so a sweep of either moves both arms alike.
The DPO-only settings (``beta``, the losses, …) have no SFT meaning and are left out, listed in the
training record. Gradient accumulation is doubled: a DPO step over B pairs runs 2B sequences (chosen
and rejected), so with the tokens matched, each optimizer step sees as many sequences and the step
counts agree. It folds into the control's persona at ``persona.dpo_weight``, as the DPO adapter does;
the control's ``train-sft`` trains on that fold.

Reads: params ``PARAMS``; ``corpora/build/<variant>/control-dpo-slot.parquet``; ``models/roles/student.json``.
Writes: ``models/<variant>/dpo-slot/`` and ``metrics/<variant>/train-dpo-slot.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from charforge.params import DEFAULT_PARAMS, load_section, params_error, recorded
from charforge.paths import build_path
from charforge.schemas.params import ModelRole, TrainStageConfig
from charforge.train.accounting import ComputeRecord
from charforge.train.compose import adapter_dir
from charforge.train.data import DPO_DEFAULT_MAX_LENGTH, conversation_dataset, read_corpus
from charforge.train.runner import TrainingRun, corpus_parent, train_adapter
from charforge.variants import VariantError, parse_variant

STAGE, PARAMS_KEY = "train-dpo-slot", "train_dpo"  # the DPO adapter's section: errors are located there
CORPUS = "control-dpo-slot.parquet"  # as control-data names it (charforge.generators.controls)
PARAMS = ("models.student", "train_dpo.lora", "train_dpo.trainer")


def dpo_slot_trainer(dpo_trainer: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``train_dpo.trainer`` as an SFT trainer's settings: the ``TrainingArguments`` fields and
    ``max_length`` (DPO's default where unset), gradient accumulation doubled (see the module doc);
    and the DPO-only keys left out."""
    import dataclasses

    from transformers import TrainingArguments

    shared = {field.name for field in dataclasses.fields(TrainingArguments)} | {"max_length"}
    kept = {key: value for key, value in dpo_trainer.items() if key in shared}
    kept.setdefault("max_length", DPO_DEFAULT_MAX_LENGTH)
    kept["gradient_accumulation_steps"] = 2 * int(dpo_trainer.get("gradient_accumulation_steps", 1))
    return kept, sorted(set(dpo_trainer) - shared)


def run(variant_name: str, params: Path = DEFAULT_PARAMS, root: Path = Path(".")) -> ComputeRecord | None:
    import dataclasses

    from trl import DPOConfig, SFTConfig, SFTTrainer

    variant = parse_variant(variant_name)
    if variant.kind not in ("plain-lora", "hhh"):
        raise VariantError(
            f"{variant_name!r} is a {variant.kind} variant: train-dpo-slot trains the first adapter of a "
            "plain-lora or hhh control (a character variant has train-dpo; the baseline no adapter before EM)"
        )
    student = load_section(ModelRole, "models.student", params)
    dpo = load_section(TrainStageConfig, PARAMS_KEY, params)
    for key in dpo.trainer:  # a typo must fail here, not be left out as "DPO-only"
        if key not in {field.name for field in dataclasses.fields(DPOConfig)}:
            raise params_error(params, (PARAMS_KEY, "trainer", key), "not a field of DPOConfig")
    trainer, dpo_only = dpo_slot_trainer(dpo.trainer)
    section = TrainStageConfig(lora=dpo.lora, trainer=trainer)
    corpus = build_path(root, variant.name, CORPUS)
    rows = read_corpus(corpus, "conversations")
    max_length = trainer["max_length"]
    training = TrainingRun(
        stage=STAGE,
        params_key=PARAMS_KEY,
        variant=variant.name,
        seed=variant.seed,
        section=section,
        params=params,
        base=student,
        adapter_dir=adapter_dir(variant.name, "dpo-slot", root),
        used=recorded(PARAMS, params),
        parents=[corpus_parent(corpus, "conversations")],
        extra={"trainer_from_train_dpo": trainer, "dpo_only_settings_left_out": dpo_only},
    )
    return train_adapter(
        training,
        SFTTrainer,
        SFTConfig,
        lambda tokenizer: conversation_dataset(rows, tokenizer, max_length, source=corpus),
        root,
    )
