"""Stage `train-sft`: the SFT LoRA on multi-turn conversations, trained on every assistant turn and
on nothing else (the label mask is built in ``charforge.train.data``; DESIGN §7).

Character variants train on their introspection data, on top of the student with the DPO adapter
folded in (DESIGN §2); the ``plain-lora`` and ``hhh`` controls train on their control corpus, on the
plain student. The ``baseline`` has no SFT stage. Literature: max length 3072.

Reads params ``models.student``, ``persona`` (the DPO adapter's weight) and ``train_sft``; the corpus
``corpora/build/<variant>/introspection.parquet`` (character) or ``control.parquet`` (controls).
Writes ``models/<variant>/sft/`` and ``metrics/<variant>/train-sft.json``.
"""

from __future__ import annotations

from pathlib import Path

from charforge.params import load_section
from charforge.schemas.params import ModelsConfig, TrainStageConfig
from charforge.train.accounting import ComputeRecord
from charforge.train.compose import adapter_dir, model_for
from charforge.train.data import conversation_dataset, read_corpus
from charforge.train.runner import TrainingRun, corpus_parent, train_adapter
from charforge.variants import VariantError, parse_variant

STAGE, PARAMS_KEY = "train-sft", "train_sft"
SFT_DEFAULT_MAX_LENGTH = 1024  # TRL's SFTConfig default, used when params do not set max_length


def run(
    variant_name: str, params: Path = Path("params.yaml"), root: Path = Path(".")
) -> ComputeRecord | None:
    from trl import SFTConfig, SFTTrainer

    variant = parse_variant(variant_name)
    if variant.kind == "baseline":
        raise VariantError(f"{variant.name}: the baseline has no character training, so no SFT stage")
    section = load_section(TrainStageConfig, PARAMS_KEY, params)
    if variant.is_character:
        corpus = root / "corpora" / "build" / variant.name / "introspection.parquet"
        base = model_for(variant.name, "dpo", params, root)
    else:
        corpus = root / "corpora" / "build" / variant.name / "control.parquet"
        base = load_section(ModelsConfig, "models", params).student
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
        parents=[corpus_parent(corpus, "conversations")],
    )
    return train_adapter(
        training,
        SFTTrainer,
        SFTConfig,
        lambda tokenizer: conversation_dataset(rows, tokenizer, max_length, source=corpus),
        root,
    )
