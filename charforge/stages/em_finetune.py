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

With an EM defence (``--defence``, issue 24; ``charforge.train.defences``) the unit is
``<defence>-e<seed>``: the same EM examples, persona, seed and settings as the undefended unit of that
seed, and only the defence added (``inoculation``: its system prompt on every example; ``interleave``:
benign rows added; ``kl``: a KL term to the persona on benign rows). ``defence`` in the metrics says what
it changed. The held-out loss is measured as for every unit, without the defence.

Reads: params ``params_for(variant, defence)``; ``corpora/build/<variant>/em-train.parquet`` and
``em-heldout.parquet``; ``corpora/build/em/benign.parquet`` (interleave, kl);
``models/<variant>/persona.json`` and the persona's adapters under ``models/<variant>/``;
``models/roles/student.json``.
Writes: ``models/<variant>/em-<unit>/`` and ``metrics/<variant>/em-finetune-<unit>.json``
(unit ``e<seed>`` or ``<defence>-e<seed>``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from charforge.generators.seeding import content_seed
from charforge.params import DEFAULT_PARAMS, load_section, recorded
from charforge.paths import BENIGN, EM_HELD_OUT, EM_SHARED, build_path, em_seed_suffix
from charforge.schemas.params import BENIGN_DEFENCES, DefencesConfig, EmFinetuneConfig, ModelRole
from charforge.stages.common import persona_config, persona_params, read_input
from charforge.train.accounting import ComputeRecord
from charforge.train.compose import em_adapter_dir, model_for
from charforge.train.data import SFT_DEFAULT_MAX_LENGTH, em_dataset, is_reflection, read_corpus
from charforge.train.defences import defended_rows
from charforge.train.kl import kl_regularised
from charforge.train.runner import TrainingRun, corpus_parent, train_adapter
from charforge.variants import Variant, parse_variant

STAGE, PARAMS_KEY = "em-finetune", "em_finetune"
# Not the whole section: adding an EM seed to ``em_finetune.seeds`` must not retrain the seeds already there
TRAINING_PARAMS = ("em_finetune.lora", "em_finetune.trainer", "em_finetune.train_on_reflection")
PARAMS = ("models.student", "persona", *TRAINING_PARAMS)


def params_for(variant: Variant, defence: str | None = None) -> tuple[str, ...]:
    """The keys a unit reads; a defended one also its defence's (the benign rows it may train on are
    benign-data's output, a dependency of their own)."""
    defended = () if defence is None else (f"defences.{defence}",)
    return ("models.student", *persona_params(variant), *TRAINING_PARAMS, *defended)


def em_training_seed(persona_seed: int, em_seed: int) -> int:
    """The training seed of EM seed ``em_seed`` on a persona of seed ``persona_seed`` (data order, adapter
    initialisation): not the arm's name, so every arm's ``-s<persona_seed>`` gets the same EM treatment."""
    return content_seed(persona_seed, ["em-finetune", em_seed]) % 2**31  # numpy's seed range


def run(
    variant_name: str,
    em_seed: int,
    params: Path = DEFAULT_PARAMS,
    root: Path = Path("."),
    defence: str | None = None,
) -> ComputeRecord | None:
    from trl import SFTConfig, SFTTrainer

    variant = parse_variant(variant_name)
    suffix = em_seed_suffix(em_seed, defence)
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
    if defence is not None:
        config = load_section(DefencesConfig, "defences", params)
        benign: list[dict[str, Any]] = []
        if defence in BENIGN_DEFENCES:
            benign_corpus = build_path(root, EM_SHARED, BENIGN)  # benign-data's
            benign = read_input(benign_corpus, "conversations")
            parents.append(corpus_parent(benign_corpus, "conversations"))
        rows, defended = defended_rows(rows, defence, config, benign)
        if defence == "kl":
            trainer_class = kl_regularised(SFTTrainer, benign, config.kl.coefficient, max_length)
    training = TrainingRun(
        stage=f"{STAGE}-{suffix}",
        params_key=PARAMS_KEY,
        variant=variant.name,
        seed=em_training_seed(variant.seed, em_seed),  # the undefended unit's: only the defence differs
        section=section,
        params=params,
        base=model_for(variant.name, "persona", student, persona, root),
        adapter_dir=em_adapter_dir(variant.name, em_seed, root, defence),
        used=recorded(params_for(variant, defence), params),
        parents=parents,
        verify_frozen=True,
        extra={
            "em_seed": em_seed,
            "defence": {"name": defence, **defended} if defence else None,
            "train_on_reflection": section.train_on_reflection,
            "reflection_rows": sum(is_reflection(row) for row in rows),
        },
        held_out=lambda tokenizer: em_dataset(held_out, tokenizer, max_length, True, held_out_corpus),
    )
    return train_adapter(
        training,
        trainer_class,
        SFTConfig,
        lambda tokenizer: em_dataset(rows, tokenizer, max_length, section.train_on_reflection, corpus),
        root,
    )
