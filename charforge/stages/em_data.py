"""Stage `em-data`: the variant's EM training conversations, made from the examples `em-generate` built
once for every arm, with the reflection turn written by the variant's persona before EM when
``em_data.reflection`` is on (the baseline's persona is the student). The reflections are the only
part of the EM data that is the variant's own.

Reads: params ``params_for(variant)``; ``corpora/build/em/em-source.parquet`` and ``em-heldout.parquet``
(`em-generate`'s, with their manifests); ``models/roles/student.json`` (token counts) and, with
reflection on, ``models/<variant>/persona.json`` (the persona writes the reflections). With reflection
off no persona is read: the rows are the shared ones, each id prefixed with the variant. (dvc.yaml
still lists the persona's adapters as deps, reflection or not: DVC has no deps that depend on a param.)

The arm takes the first ``em_data.rows`` of em-generate's rows in a fixed hash order (all, with
``rows`` null), the same examples in every arm; with reflections on, an example whose reflection fails
a filter stays without it (``without_reflection`` in the metrics, by reason), so the arms' EM examples
never differ. ``rows`` (else ``min_rows``) is checked again, with em-generate's rejections carried over
and the rows not taken counted as ``beyond_rows``, so the reasons add up to the input.

Writes: ``corpora/build/<variant>/em-train.parquet`` and ``em-heldout.parquet`` (the held-out examples
as em-generate wrote them: every arm is measured on the same EM answers) with their manifests, which
name em-generate's files as parents and record its params beside this stage's; and
``metrics/<variant>/em-data.json`` (rows, rejections, tokens and em-generate's ``generated`` block).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from charforge.params import DEFAULT_PARAMS, load_section, recorded
from charforge.paths import EM_HELD_OUT, EM_SHARED, EM_SOURCE, build_path, metrics_path
from charforge.schemas import Manifest
from charforge.schemas.manifest import manifest_path_for
from charforge.schemas.params import GenerationConfig, ModelRole
from charforge.stages.common import (
    parent,
    persona_config,
    persona_params,
    read_input,
    token_totals,
    write_stage_corpus,
    write_stage_metrics,
)
from charforge.stages.em_generate import em_data_config
from charforge.train.compose import model_for
from charforge.variants import Variant, parse_variant

STAGE = "em-data"
# the em_data keys an arm uses: its reflections', the answer filters they pass, the rows it takes
ARM_KEYS = (
    "min_rows",
    "rows",
    "max_new_tokens",
    "max_answer_chars",
    "trim_cut_off",
    "reflection",
    "reflection_question",
)
PARAMS = ("models.student", "persona", "generation", *(f"em_data.{key}" for key in ARM_KEYS))


def params_for(variant: Variant) -> tuple[str, ...]:
    return ("models.student", *persona_params(variant), "generation", *(f"em_data.{key}" for key in ARM_KEYS))


def _shared(root: Path, name: str) -> tuple[list[dict[str, Any]], Manifest, Path]:
    """em-generate's corpus ``name`` (validated, manifest included): its rows as written, its manifest."""
    from charforge.corpus import drop_nulls

    path = build_path(root, EM_SHARED, name)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: not found; em-generate makes the EM examples once for every arm: run "
            "`charforge run em-generate` first (`dvc repro` runs it)"
        )
    rows = [drop_nulls(row) for row in read_input(path, "conversations")]  # parquet's nulls: absent keys
    return rows, Manifest.model_validate_json(manifest_path_for(path).read_text()), path


def run(variant_name: str, params: Path = DEFAULT_PARAMS, root: Path = Path(".")) -> Manifest:
    from charforge.corpus import write_corpus
    from charforge.generators.chat import GenerationRun, model_card, rendered_prompt, with_max_new_tokens
    from charforge.generators.em_data import EmCorpus, arm_corpus

    variant = parse_variant(variant_name)
    student = load_section(ModelRole, "models.student", params)
    generation = load_section(GenerationConfig, "generation", params)
    config = em_data_config(ARM_KEYS, params)
    source_rows, source, source_path = _shared(root, EM_SOURCE)
    held_rows, held_manifest, held_path = _shared(root, EM_HELD_OUT)
    made = dict(source.metrics)
    shared = EmCorpus(
        rows=source_rows,
        rejected=Counter(source.rejected),
        input_rows=made["input_rows"],
        trimmed_by_example=Counter(made.get("trimmed_by_example") or {}),
    )
    persona = None
    if config.reflection:  # model_for gives the plain student for the baseline
        persona_model = model_for(variant.name, "persona", student, persona_config(variant, params), root)
        persona = with_max_new_tokens(persona_model, config.max_new_tokens)
    label = student.model if variant.kind == "baseline" else f"{student.model} + {variant.name} persona"
    generation_run = GenerationRun(variant.name, variant.seed, generation)
    result = arm_corpus(shared, config, persona, generation_run, persona_label=label)

    metrics: dict[str, Any] = {
        "input_rows": result.input_rows,
        "tokens": token_totals(student, result.rows),
        "kept_trimmed_cut_off": result.trimmed,
        # examples kept without their reflection turn (it failed a filter), by reason: the report shows them
        "without_reflection": dict(sorted(result.without_reflection.items())),
    }
    # what em-generate recorded of the shared examples (teacher, licence, the generated block)
    metrics |= {key: made[key] for key in ("teacher", "teacher_licence", "generated") if key in made}
    rendered = dict(made.get("rendered_prompts") or {})
    # the params that made the rows: em-generate's (its manifest) and this stage's own
    made_with = dict(source.params)
    resolved = dict(made_with.pop("resolved", None) or {})
    used: dict[str, Any] = {**made_with, **recorded(params_for(variant), params)}
    used["variant"] = {"kind": variant.kind, "seed": variant.seed}
    if persona is not None:
        # the reflections are written by the student (with the variant's adapters): its licence applies
        metrics["persona"] = {"model": label, "licence": model_card(student)["licence"]}
        resolved["persona"] = persona.model_dump(mode="json")
        if "reflection" in result.examples:
            rendered["reflection"] = rendered_prompt(persona, result.examples["reflection"])
    metrics["rendered_prompts"] = rendered
    if resolved:
        used["resolved"] = resolved
    # the held-out examples as em-generate wrote them (no reflection turn): every arm is measured on the
    # same EM answers, so in-domain learning compares across arms
    write_corpus(
        [{**row, "id": f"{variant.name}.{row['id']}", "variant": variant.name} for row in held_rows],
        build_path(root, variant.name, EM_HELD_OUT),
        "conversations",
        params=used,
        parents=[parent(held_path, "em-shared-heldout")],
        variant=variant.name,
        metrics=dict(held_manifest.metrics),
        root=root,
    )
    metrics["held_out"] = {"examples": len(held_rows), "file": EM_HELD_OUT}
    manifest = write_stage_corpus(
        STAGE,
        root,
        variant.name,
        "em-train.parquet",
        "conversations",
        result,
        params=used,
        parents=[parent(source_path, "em-shared")],
        metrics=metrics,
    )
    # the stage metrics also show the reflections that failed and, with source: generate, what
    # generation kept and dropped, with examples
    summary = json.loads(metrics_path(root, variant.name, STAGE).read_text())
    summary["without_reflection"] = metrics["without_reflection"]
    if "generated" in metrics:
        summary["generated"] = metrics["generated"]
    write_stage_metrics(root, variant.name, STAGE, summary)
    return manifest
