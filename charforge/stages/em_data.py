"""Stage `em-data`: the variant's EM training conversations, with the reflection turn written by the
variant's persona before EM when ``em_data.reflection`` is on (the baseline's persona is the student).

Reads: params ``params_for(variant)``; the shipped seed set ``corpora/em/<domain>-<regime>.jsonl`` or the
user's JSONL (``em_data.path``); ``models/<variant>/persona.json`` (the persona writes the reflections) and
``models/roles/{teacher,student}.json``.
``em_data.held_out`` source examples (a fixed hash order: the same for every variant) are kept out of
training and written apart, as the source has them, for the judge-free in-domain learning measure of
`em-finetune`.

``source: generate``: the teacher's examples sample with ``generation.seed`` alone, so every variant
gets the same ones (only the reflections are the variant's); with ``em_data.regime_check`` each answer
not in the regime is dropped and counted. The record of what generation kept and dropped, with the
share not in the regime and a few rows of each, is ``generated`` in the manifest's metrics and in
``metrics/<variant>/em-data.json``. Fewer than ``em_data.min_rows`` examples left: the stage fails.

Writes: ``corpora/build/<variant>/em-train.parquet`` and ``em-heldout.parquet`` with their manifests,
and ``metrics/<variant>/em-data.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

from charforge.params import DEFAULT_PARAMS, load_section, recorded
from charforge.paths import EM_HELD_OUT, EM_SEEDS, build_path, metrics_path
from charforge.schemas import Manifest
from charforge.schemas.params import EmDataConfig, GenerationConfig, ModelRole
from charforge.stages.common import (
    parent,
    persona_config,
    persona_params,
    token_totals,
    write_stage_corpus,
    write_stage_metrics,
)
from charforge.train.compose import model_for
from charforge.variants import Variant, parse_variant

STAGE = "em-data"
PARAMS = ("models.teacher", "models.student", "persona", "generation", "em_data")


def params_for(variant: Variant) -> tuple[str, ...]:
    return ("models.teacher", "models.student", *persona_params(variant), "generation", "em_data")


def source_path(config: EmDataConfig, root: Path) -> Path:
    if config.source == "jsonl":  # relative and inside corpora/em (checked by EmDataConfig)
        return root / (config.path or "")
    return root / EM_SEEDS / f"{config.domain}-{config.regime}.jsonl"


def run(variant_name: str, params: Path = DEFAULT_PARAMS, root: Path = Path(".")) -> Manifest:
    from charforge.corpus import write_corpus
    from charforge.generators.chat import GenerationRun, model_card, rendered_prompt, with_max_new_tokens
    from charforge.generators.em_data import check_role, em_corpus, held_out_examples, load_examples

    variant = parse_variant(variant_name)
    teacher_role = load_section(ModelRole, "models.teacher", params)
    student = load_section(ModelRole, "models.student", params)
    generation = load_section(GenerationConfig, "generation", params)
    config = load_section(EmDataConfig, "em_data", params)
    source = source_path(config, root)
    base, held_out = held_out_examples(load_examples(source), config.held_out, source)
    persona = None
    if config.reflection:  # model_for gives the plain student for the baseline
        persona_model = model_for(variant.name, "persona", student, persona_config(variant, params), root)
        persona = with_max_new_tokens(persona_model, config.max_new_tokens)
    teacher = with_max_new_tokens(teacher_role, config.max_new_tokens)

    label = student.model if variant.kind == "baseline" else f"{student.model} + {variant.name} persona"
    generation_run = GenerationRun(variant.name, variant.seed, generation)
    result = em_corpus(base, config, teacher, persona, generation_run, persona_label=label)
    metrics: dict = {
        "input_rows": result.input_rows,
        "tokens": token_totals(student, result.rows),
        "kept_trimmed_cut_off": result.trimmed,
    }
    used: dict = {**recorded(params_for(variant), params)}
    used["variant"] = {"kind": variant.kind, "seed": variant.seed}
    resolved: dict = {}
    rendered = {}
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
    if persona is not None:
        # the reflections are written by the student (with the variant's adapters): its licence applies
        metrics["persona"] = {"model": label, "licence": model_card(student)["licence"]}
        resolved["persona"] = persona.model_dump(mode="json")
        if "reflection" in result.examples:
            rendered["reflection"] = rendered_prompt(persona, result.examples["reflection"])
    metrics["rendered_prompts"] = rendered
    if resolved:
        used["resolved"] = resolved
    # the held-out examples as the source has them (no reflection turn): every arm is measured on the
    # same EM answers, so in-domain learning compares across arms
    recorded_as = generation_run.recorded_as("charforge.stages.em_data.held_out", {}).provenance
    write_corpus(
        [
            {
                "id": f"{variant.name}.{row['id']}",
                "variant": variant.name,
                "messages": row["messages"],
                "provenance": row.get("provenance") or recorded_as,
            }
            for row in held_out
        ],
        build_path(root, variant.name, EM_HELD_OUT),
        "conversations",
        params=used,
        parents=[parent(source, "em-source")],
        variant=variant.name,
        metrics={"held_out_of": len(base) + len(held_out)},
        root=root,
    )
    metrics["held_out"] = {"examples": len(held_out), "file": EM_HELD_OUT}
    manifest = write_stage_corpus(
        STAGE,
        root,
        variant.name,
        "em-train.parquet",
        "conversations",
        result,
        params=used,
        parents=[parent(source, "em-source")],
        metrics=metrics,
    )
    if "generated" in metrics:  # the stage metrics show what generation kept and dropped, with examples
        summary = json.loads(metrics_path(root, variant.name, STAGE).read_text())
        write_stage_metrics(root, variant.name, STAGE, {**summary, "generated": metrics["generated"]})
    return manifest
