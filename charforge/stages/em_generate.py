"""Stage `em-generate` (once for the grid): the EM training examples every arm trains on, so that the arms
share them by construction (one generation, the teacher called once), not by a seed or a cache.

Reads: params ``PARAMS``; the shipped seed set ``corpora/em/<domain>-<regime>.jsonl`` or the user's
JSONL (``em_data.path``); ``models/roles/teacher.json``. Of ``em_data`` it declares, and uses, every
key but the reflection's (``reflection``, ``reflection_question``: the arms' own, in `em-data`), so
turning reflection on reruns no generation.

``em_data.held_out`` source examples (a fixed hash order) are kept out of training and written apart, as
the source has them, for the judge-free in-domain learning measure of `em-finetune`. ``source:
generate``: the teacher writes ``n_generate`` more (seeded by ``generation.seed``); with
``em_data.regime_check`` each answer not in the regime is dropped and counted. Fewer than
``em_data.rows`` (else ``min_rows``) examples left fails here, before any arm's work: an arm's
reflections never add rows (`em-data` checks again after them). Every example kept is written (a
corpus file is stored in id order); each arm takes the first ``rows`` of them in a fixed hash order
(``rows_per_arm`` and ``not_taken``, the examples no arm trains on, in the metrics).

Writes: ``corpora/build/em/em-source.parquet`` (the training examples before reflections) and
``corpora/build/em/em-heldout.parquet``, each with its manifest, and ``metrics/em/em-generate.json``:
the counts, rejections by reason and, with ``source: generate``, the ``generated`` block (what
generation kept and dropped, the share not in the regime, a few rows of each). ``em`` names no variant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from charforge.params import DEFAULT_PARAMS, load_section, recorded
from charforge.paths import EM_HELD_OUT, EM_SEEDS, EM_SHARED, EM_SOURCE, build_path
from charforge.schemas import Manifest
from charforge.schemas.params import EmDataConfig, GenerationConfig, ModelRole
from charforge.stages.common import parent, write_stage_metrics

STAGE = "em-generate"
# em_data's keys but the reflection's (listed, not "em_data": DVC would rerun generation for those too)
SHARED_KEYS = (
    "source",
    "path",
    "domain",
    "regime",
    "n_generate",
    "regime_check",
    "min_rows",
    "rows",
    "held_out",
    "max_new_tokens",
    "max_answer_chars",
    "trim_cut_off",
)
PARAMS = ("models.teacher", "generation", *(f"em_data.{key}" for key in SHARED_KEYS))


def em_data_config(keys: tuple[str, ...], params: Path) -> EmDataConfig:
    """``em_data`` as a stage that declares only ``keys`` of it sees it: the section is validated whole
    (a problem is located at its line), then every other key is left at its default, so a value the
    stage's DVC params do not track can never change what it makes."""
    section = load_section(EmDataConfig, "em_data", params)
    return EmDataConfig.model_validate({key: getattr(section, key) for key in keys})


def source_path(config: EmDataConfig, root: Path) -> Path:
    if config.source == "jsonl":  # relative and inside corpora/em (checked by EmDataConfig)
        return root / (config.path or "")
    return root / EM_SEEDS / f"{config.domain}-{config.regime}.jsonl"


def run(params: Path = DEFAULT_PARAMS, root: Path = Path(".")) -> Manifest:
    from charforge.corpus import write_corpus
    from charforge.generators.chat import GenerationRun, model_card, rendered_prompt, with_max_new_tokens
    from charforge.generators.em_data import check_role, held_out_examples, load_examples, shared_corpus

    teacher_role = load_section(ModelRole, "models.teacher", params)
    generation = load_section(GenerationConfig, "generation", params)
    config = em_data_config(SHARED_KEYS, params)
    source = source_path(config, root)
    base, held_out = held_out_examples(load_examples(source), config.held_out, source)
    teacher = with_max_new_tokens(teacher_role, config.max_new_tokens)
    # no variant: seed 0, so the rows record generation.seed alone (as generated rows always do)
    generation_run = GenerationRun(EM_SHARED, 0, generation)
    result = shared_corpus(base, config, teacher, generation_run, held_out)
    metrics: dict[str, Any] = {
        "input_rows": result.input_rows,
        "rows_per_arm": config.rows,  # null: every row written here
        "not_taken": None if config.rows is None else len(result.rows) - config.rows,
        "kept_trimmed_cut_off": result.trimmed,
        # per kept example, for `em-data`: an arm whose reflection drops it no longer counts its trims
        "trimmed_by_example": {
            key: count for key, count in sorted(result.trimmed_by_example.items()) if count
        },
    }
    used: dict[str, Any] = {**recorded(PARAMS, params)}
    resolved: dict[str, Any] = {}
    rendered: dict[str, Any] = {}
    if config.source == "generate":
        card = model_card(teacher)
        metrics.update(teacher=card, teacher_licence=card["licence"])
        resolved["teacher"] = teacher.model_dump(mode="json")  # with em_data's answer limit
        rendered.update(
            {
                part: rendered_prompt(teacher, result.examples[part])
                for part in ("question", "answer")
                if part in result.examples
            }
        )
        if config.regime_check:
            checker = check_role(teacher)
            resolved["regime_check"] = checker.model_dump(mode="json")
            if "regime_check" in result.examples:
                rendered["regime_check"] = rendered_prompt(checker, result.examples["regime_check"])
        if result.generated is not None:
            metrics["generated"] = result.generated.summary()
    elif config.source == "seed":  # no teacher: the shipped seed set is part of charforge (Apache-2.0)
        metrics["teacher_licence"] = "Apache-2.0 (charforge's shipped EM seed set; no teacher)"
    else:
        metrics["teacher_licence"] = "unknown (user-supplied EM data)"
    metrics["rendered_prompts"] = rendered
    if resolved:
        used["resolved"] = resolved
    recorded_as = generation_run.recorded_as("charforge.stages.em_generate.held_out", {}).provenance
    held = write_corpus(
        [
            {
                "id": row["id"],
                "variant": EM_SHARED,
                "messages": row["messages"],
                "provenance": row.get("provenance") or recorded_as,
            }
            for row in held_out
        ],
        build_path(root, EM_SHARED, EM_HELD_OUT),
        "conversations",
        params=used,
        parents=[parent(source, "em-source")],
        variant=EM_SHARED,
        metrics={"held_out_of": len(base) + len(held_out)},
        root=root,
    )
    metrics["held_out"] = {"examples": held.rows, "file": EM_HELD_OUT}
    manifest = write_corpus(
        result.rows,
        build_path(root, EM_SHARED, EM_SOURCE),
        "conversations",
        params=used,
        parents=[parent(source, "em-source")],
        rejected=dict(result.rejected),
        variant=EM_SHARED,
        metrics=metrics,
        root=root,
    )
    summary = {
        key: metrics[key]
        for key in (
            "input_rows",
            "rows_per_arm",
            "not_taken",
            "kept_trimmed_cut_off",
            "held_out",
            "teacher_licence",
            "generated",
        )
        if key in metrics
    }
    write_stage_metrics(
        root, EM_SHARED, STAGE, {"rows": manifest.rows, "rejected": manifest.rejected, **summary}
    )
    return manifest
