"""Stage `train-dpo`: the character LoRA, trained with DPO on the variant's preference pairs.

Chosen = the teacher in character, rejected = the student plainly (docs/design.md §1). Literature
recipe (§5): LoRA rank 64, alpha 128, lr 5e-5, beta 0.1 with a small NLL term (TRL: ``loss_type:
[sigmoid, sft]`` with ``loss_weights``), 1 epoch, max length 1024; params.yaml holds the smoke values.

Reads: params ``PARAMS``; ``corpora/build/<variant>/pairs.parquet``; ``models/roles/student.json``.
Writes: ``models/<variant>/dpo/`` and ``metrics/<variant>/train-dpo.json``.
"""

from __future__ import annotations

from pathlib import Path

from charforge.params import DEFAULT_PARAMS, load_section, recorded
from charforge.paths import build_path
from charforge.schemas.params import ModelRole, TrainStageConfig
from charforge.train.accounting import ComputeRecord
from charforge.train.compose import adapter_dir
from charforge.train.data import preference_dataset, read_corpus
from charforge.train.runner import TrainingRun, corpus_parent, train_adapter
from charforge.variants import character_variant

STAGE, PARAMS_KEY = "train-dpo", "train_dpo"
PARAMS = ("models.student", "train_dpo")


def run(variant_name: str, params: Path = DEFAULT_PARAMS, root: Path = Path(".")) -> ComputeRecord | None:
    from trl import DPOConfig, DPOTrainer

    variant = character_variant(variant_name)
    section = load_section(TrainStageConfig, PARAMS_KEY, params)
    student = load_section(ModelRole, "models.student", params)
    pairs = build_path(root, variant.name, "pairs.parquet")
    rows = read_corpus(pairs, "pairs")
    training = TrainingRun(
        stage=STAGE,
        params_key=PARAMS_KEY,
        variant=variant.name,
        seed=variant.seed,
        section=section,
        params=params,
        base=student,
        adapter_dir=adapter_dir(variant.name, "dpo", root),
        used=recorded(PARAMS, params),
        parents=[corpus_parent(pairs, "pairs")],
        reference_forward=True,
    )
    return train_adapter(training, DPOTrainer, DPOConfig, lambda _: preference_dataset(rows), root)
