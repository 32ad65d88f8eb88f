"""Stage `train-sft`: the SFT LoRA on multi-turn conversations, trained on every assistant turn and
on nothing else (the label mask is built in ``charforge.train.data``; docs/design.md §7).

Character variants train on their introspection data, on top of the student with the DPO adapter
folded in (§2); the ``plain-lora`` and ``hhh`` controls train on their control corpus, on the plain
student. The ``baseline`` has no SFT stage. Literature: max length 3072.

Reads: params ``PARAMS`` (``persona.dpo_weight``: the DPO adapter's weight in the base); the corpus
``corpora/build/<variant>/introspection.parquet`` (character) or ``control.parquet`` (controls);
``models/roles/student.json``.
Writes: ``models/<variant>/sft/`` and ``metrics/<variant>/train-sft.json``.
"""

from __future__ import annotations

from pathlib import Path

from charforge.params import DEFAULT_PARAMS, load_section, recorded
from charforge.paths import build_path
from charforge.schemas.params import ModelRole, PersonaConfig, TrainStageConfig
from charforge.train.accounting import ComputeRecord
from charforge.train.compose import adapter_dir, model_for
from charforge.train.data import SFT_DEFAULT_MAX_LENGTH, conversation_dataset, read_corpus
from charforge.train.runner import TrainingRun, corpus_parent, train_adapter
from charforge.variants import Variant, VariantError, parse_variant

STAGE, PARAMS_KEY = "train-sft", "train_sft"
PARAMS = ("models.student", "persona.dpo_weight", "train_sft")


def params_for(variant: Variant) -> tuple[str, ...]:
    """A control trains on the plain student: no DPO adapter to weigh."""
    return PARAMS if variant.is_character else ("models.student", "train_sft")


def run(variant_name: str, params: Path = DEFAULT_PARAMS, root: Path = Path(".")) -> ComputeRecord | None:
    from trl import SFTConfig, SFTTrainer

    variant = parse_variant(variant_name)
    if variant.kind == "baseline":
        raise VariantError(f"{variant.name}: the baseline has no character training, so no SFT stage")
    section = load_section(TrainStageConfig, PARAMS_KEY, params)
    student = load_section(ModelRole, "models.student", params)
    if variant.is_character:
        corpus = build_path(root, variant.name, "introspection.parquet")
        dpo_weight = load_section(PersonaConfig, "persona", params).dpo_weight
        base = model_for(variant.name, "dpo", student, PersonaConfig(dpo_weight=dpo_weight), root)
    else:
        corpus = build_path(root, variant.name, "control.parquet")
        base = student
    rows = read_corpus(corpus, "conversations")
    max_length = section.trainer.get("max_length", SFT_DEFAULT_MAX_LENGTH)
    training = TrainingRun(
        stage=STAGE,
        params_key=PARAMS_KEY,
        variant=variant.name,
        seed=variant.seed,
        section=section,
        params=params,
        base=base,
        adapter_dir=adapter_dir(variant.name, "sft", root),
        used=recorded(params_for(variant), params),
        parents=[corpus_parent(corpus, "conversations")],
    )
    return train_adapter(
        training,
        SFTTrainer,
        SFTConfig,
        lambda tokenizer: conversation_dataset(rows, tokenizer, max_length, source=corpus),
        root,
    )
