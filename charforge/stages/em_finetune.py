"""Stage `em-finetune`: the narrow corrupting fine-tune, a new LoRA stacked on the frozen persona.

The persona (the variant before EM: docs/design.md §2) is folded into a plain model and frozen; only
the new adapter trains (the persona's weights stay bit-identical), with the loss on the responses only.
Literature recipe (§5): rank 32, alpha 64, rs-LoRA, all attention and MLP projections, lr 1e-5,
1 epoch, effective batch 16. One run per EM fine-tune seed of ``em_finetune.seeds`` (``--em-seed``),
trained with ``em_training_seed(persona seed, EM seed)``: the same for every arm's persona of one seed
(the EM treatment identical across arms), different for every unit of one arm. With
reflection-augmented data (H4), ``train_on_reflection`` decides
whether the reflection reply (the last assistant turn of a ``source: em-reflection`` row) is trained
on too. It applies to reflection rows only: a plain EM row, multi-turn or not, keeps every assistant
turn in the loss.

The EM examples `em-data` held out are scored on the frozen persona and on persona + the new adapter
(``held_out_loss`` in the metrics: mean loss per answer token before, after, and the change): in-domain
learning measured without the judge, so "robust" can be told from "did not learn".

An EM defence (`em-finetune-defended`, issue 24) runs this very stage with a ``Defence``: the same
EM examples, persona, seed and settings, and only what the defence changes.

Reads: params ``params_for(variant)``; ``corpora/build/<variant>/em-train.parquet`` and
``em-heldout.parquet``; ``models/<variant>/persona.json`` and the persona's adapters under
``models/<variant>/``; ``models/roles/student.json``.
Writes: ``models/<variant>/em-e<seed>/`` and ``metrics/<variant>/em-finetune-e<seed>.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charforge.generators.seeding import content_seed
from charforge.params import DEFAULT_PARAMS, load_section, recorded
from charforge.paths import EM_HELD_OUT, build_path, em_seed_suffix
from charforge.schemas.manifest import ParentArtifact
from charforge.schemas.params import EmFinetuneConfig, ModelRole
from charforge.stages.common import persona_config, persona_params
from charforge.train.accounting import ComputeRecord
from charforge.train.compose import em_adapter_dir, model_for
from charforge.train.data import SFT_DEFAULT_MAX_LENGTH, em_dataset, is_reflection, read_corpus
from charforge.train.runner import TrainingRun, corpus_parent, train_adapter
from charforge.variants import Variant, parse_variant

STAGE, PARAMS_KEY = "em-finetune", "em_finetune"
# Not the whole section: adding an EM seed to ``em_finetune.seeds`` must not retrain the seeds already there
TRAINING_PARAMS = ("em_finetune.lora", "em_finetune.trainer", "em_finetune.train_on_reflection")
PARAMS = ("models.student", "persona", *TRAINING_PARAMS)


def params_for(variant: Variant) -> tuple[str, ...]:
    return ("models.student", *persona_params(variant), *TRAINING_PARAMS)


Rows = list[dict[str, Any]]


@dataclass
class Defence:
    """What an EM defence changes in a unit (``charforge.stages.em_finetune_defended`` makes it): the
    rows trained on, the held-out rows as the defence would present them (a second held-out loss), the
    trainer, and the parents and params it adds to the record."""

    name: str
    rows: Callable[[Rows], tuple[Rows, dict[str, Any]]]  # EM rows → training rows, what changed
    held_out: Callable[[Rows], Rows] | None = None
    trainer: Callable[[type, int | None], type] | None = None  # (SFTTrainer, max_length) → trainer class
    parents: list[ParentArtifact] = field(default_factory=list)
    params: tuple[str, ...] = ()


def em_training_seed(persona_seed: int, em_seed: int) -> int:
    """The training seed of EM seed ``em_seed`` on a persona of seed ``persona_seed`` (data order, adapter
    initialisation): not the arm's name, so every arm's ``-s<persona_seed>`` gets the same EM treatment."""
    return content_seed(persona_seed, ["em-finetune", em_seed]) % 2**31  # numpy's seed range


def run(
    variant_name: str,
    em_seed: int,
    params: Path = DEFAULT_PARAMS,
    root: Path = Path("."),
    defence: Defence | None = None,
) -> ComputeRecord | None:
    from trl import SFTConfig, SFTTrainer

    variant = parse_variant(variant_name)
    suffix = em_seed_suffix(em_seed, defence.name if defence else None)
    section = load_section(EmFinetuneConfig, PARAMS_KEY, params)
    student = load_section(ModelRole, "models.student", params)
    persona = persona_config(variant, params)
    corpus = build_path(root, variant.name, "em-train.parquet")
    rows = read_corpus(corpus, "conversations")
    held_out_corpus = build_path(root, variant.name, EM_HELD_OUT)
    held_out = read_corpus(held_out_corpus, "conversations")
    max_length = section.trainer.get("max_length", SFT_DEFAULT_MAX_LENGTH)
    trainer_class: type = SFTTrainer
    parents = [corpus_parent(corpus, "conversations"), corpus_parent(held_out_corpus, "conversations")]
    defended: dict[str, Any] = {}
    shown: Rows | None = None  # the held-out rows as the defence presents them, where it changes them
    if defence is not None:
        rows, defended = defence.rows(rows)
        parents += defence.parents
        if defence.trainer is not None:
            trainer_class = defence.trainer(SFTTrainer, max_length)
        if defence.held_out is not None:
            shown = defence.held_out(held_out)
    training = TrainingRun(
        stage=f"{STAGE}-{suffix}",
        params_key=PARAMS_KEY,
        variant=variant.name,
        seed=em_training_seed(variant.seed, em_seed),  # the undefended unit's: only the defence differs
        section=section,
        params=params,
        base=model_for(variant.name, "persona", student, persona, root),
        adapter_dir=em_adapter_dir(variant.name, em_seed, root, defence.name if defence else None),
        used=recorded((*params_for(variant), *(defence.params if defence else ())), params),
        parents=parents,
        verify_frozen=True,
        extra={
            "em_seed": em_seed,
            "defence": {"name": defence.name, **defended} if defence else None,
            "train_on_reflection": section.train_on_reflection,
            "reflection_rows": sum(is_reflection(row) for row in rows),
        },
        held_out=lambda tokenizer: em_dataset(held_out, tokenizer, max_length, True, held_out_corpus),
        held_out_as_trained=None
        if shown is None
        else (lambda tokenizer: em_dataset(shown, tokenizer, max_length, True, held_out_corpus)),
    )
    return train_adapter(
        training,
        trainer_class,
        SFTConfig,
        lambda tokenizer: em_dataset(rows, tokenizer, max_length, section.train_on_reflection, corpus),
        root,
    )
