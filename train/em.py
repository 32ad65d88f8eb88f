"""Stage `em-finetune`: the narrow corrupting fine-tune, a new LoRA stacked on the frozen persona.

The persona (the variant before EM: DESIGN §2) is folded into a plain model and frozen; only the new
adapter trains (the persona's weights stay bit-identical), with the loss on the responses only.
Literature recipe (DESIGN §5): rank 32, alpha 64, rs-LoRA, all attention and MLP projections,
lr 1e-5, 1 epoch, effective batch 16. With reflection-augmented data (H4), ``train_on_reflection``
decides whether the reflection reply (the last assistant turn of a ``source: em-reflection`` row) is
trained on too. It applies to reflection rows only: a plain EM row, multi-turn or not, keeps every
assistant turn in the loss.

Reads params ``models.student``, ``persona`` and ``em_finetune``; the corpus
``corpora/build/<variant>/em-train.parquet``.
Writes ``models/<variant>/em/`` and ``metrics/<variant>/em-finetune.json``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charforge.params import load_section
from charforge.schemas.messages import EM_REFLECTION_SOURCE
from charforge.schemas.params import EmFinetuneConfig
from charforge.train.accounting import ComputeRecord
from charforge.train.compose import adapter_dir, model_for
from charforge.train.data import conversation_dataset, read_corpus
from charforge.train.runner import TrainingRun, corpus_parent, train_adapter
from charforge.train.sft import SFT_DEFAULT_MAX_LENGTH
from charforge.variants import parse_variant

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

STAGE, PARAMS_KEY = "em-finetune", "em_finetune"


def is_reflection(row: Mapping[str, Any]) -> bool:
    """The row ends in a reflection reply (written by the em-data stage with ``em_data.reflection``)."""
    return row.get("source") == EM_REFLECTION_SOURCE


def em_dataset(
    rows: Sequence[dict[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int | None,
    train_on_reflection: bool,
    source: Path | None = None,
) -> Dataset:
    """The EM fine-tune's tokenized rows: every assistant turn in the loss, except the reflection reply
    of a reflection row when ``train_on_reflection`` is off."""
    return conversation_dataset(
        rows,
        tokenizer,
        max_length,
        mask_last_assistant=None if train_on_reflection else is_reflection,
        source=source,
    )


def run(
    variant_name: str, params: Path = Path("params.yaml"), root: Path = Path(".")
) -> ComputeRecord | None:
    from trl import SFTConfig, SFTTrainer

    variant = parse_variant(variant_name)
    section = load_section(EmFinetuneConfig, PARAMS_KEY, params)
    corpus = root / "corpora" / "build" / variant.name / "em-train.parquet"
    rows = read_corpus(corpus, "conversations")
    max_length = section.trainer.get("max_length", SFT_DEFAULT_MAX_LENGTH)
    training = TrainingRun(
        stage=STAGE,
        params_key=PARAMS_KEY,
        variant=variant.name,
        seed=variant.seed,
        section=section,
        params=params,
        base=model_for(variant.name, "persona", params, root),
        adapter_dir=adapter_dir(variant.name, "em", root),
        parents=[corpus_parent(corpus, "conversations")],
        verify_frozen=True,
        extra={
            "train_on_reflection": section.train_on_reflection,
            "reflection_rows": sum(is_reflection(row) for row in rows),
        },
    )
    return train_adapter(
        training,
        SFTTrainer,
        SFTConfig,
        lambda tokenizer: em_dataset(rows, tokenizer, max_length, section.train_on_reflection, corpus),
        root,
    )
