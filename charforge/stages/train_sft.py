"""Stage `train-sft`: the SFT LoRA on multi-turn conversations, trained on every assistant turn and
on nothing else (the label mask is built in ``charforge.train.data``; docs/design.md §7).

It trains on the student with the variant's first adapter folded in at ``persona.dpo_weight`` (§2): a
character variant's DPO adapter, under its introspection data; a ``plain-lora`` / ``hhh`` control's
``dpo-slot`` adapter (`train-dpo-slot`), under its control corpus — so a control's two adapters sit in
the character arm's slots with its ranks and weights. The ``baseline`` has no SFT stage. Literature:
max length 3072.

Reads: params ``PARAMS`` (``persona.dpo_weight``: the first adapter's weight in the base); the corpus
``corpora/build/<variant>/introspection.parquet`` (character) or ``control.parquet`` (controls); the
first adapter ``models/<variant>/dpo/`` or ``dpo-slot/``; ``models/roles/student.json``.
Writes: ``models/<variant>/sft/`` and ``metrics/<variant>/train-sft.json`` (``extra.base_adapters``:
the adapters folded into the base, with their weights)."""

from __future__ import annotations

from pathlib import Path

from charforge.params import DEFAULT_PARAMS, load_section, recorded
from charforge.paths import build_path
from charforge.schemas.params import ModelRole, PersonaConfig, TrainStageConfig
from charforge.train.accounting import ComputeRecord
from charforge.train.compose import adapter_dir, adapters_for, model_for
from charforge.train.data import SFT_DEFAULT_MAX_LENGTH, conversation_dataset, read_corpus
from charforge.train.runner import TrainingRun, corpus_parent, train_adapter
from charforge.variants import VariantError, parse_variant

STAGE, PARAMS_KEY = "train-sft", "train_sft"
PARAMS = ("models.student", "persona.dpo_weight", "train_sft")


def run(variant_name: str, params: Path = DEFAULT_PARAMS, root: Path = Path(".")) -> ComputeRecord | None:
    from trl import SFTConfig, SFTTrainer

    variant = parse_variant(variant_name)
    if variant.kind == "baseline":
        raise VariantError(f"{variant.name}: the baseline has no character training, so no SFT stage")
    section = load_section(TrainStageConfig, PARAMS_KEY, params)
    student = load_section(ModelRole, "models.student", params)
    corpus = build_path(
        root, variant.name, "introspection.parquet" if variant.is_character else "control.parquet"
    )
    persona = PersonaConfig(dpo_weight=load_section(PersonaConfig, "persona", params).dpo_weight)
    base = model_for(variant.name, "dpo", student, persona, root)
    folded = [
        {"path": adapter.path.relative_to(root).as_posix(), "weight": adapter.weight}
        for adapter in adapters_for(variant, "dpo", persona, root)
    ]
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
        used=recorded(PARAMS, params),
        parents=[corpus_parent(corpus, "conversations")],
        extra={"base_adapters": folded},
    )
    return train_adapter(
        training,
        SFTTrainer,
        SFTConfig,
        lambda tokenizer: conversation_dataset(rows, tokenizer, max_length, source=corpus),
        root,
    )
