"""Stage `introspect`: self-reflection and self-interaction conversations for one character variant,
written by the variant's DPO-trained model (student + DPO adapter, folded) with the variant's
constitution in its system prompt, and kept without it (docs/design.md §2).

Reads: params ``PARAMS``; ``corpora/introspection.yaml``, the variant's constitution, the DPO adapter at
``models/<variant>/dpo/`` and ``models/roles/student.json``.
Writes: ``corpora/build/<variant>/introspection.parquet`` (conversations; every assistant turn a
training target) with its manifest (rows per source, the generation prompts as rendered and the
system prompt the training rows carry instead; ``self_interaction``: conversations complete, truncated
and dropped, turns kept against turns asked; ``context``: the asked conversation sized against the
student's context), and ``metrics/<variant>/introspect.json`` (the corpus summary, the
``self_interaction`` counts flat, for the report's per-arm table, and the ``context`` block).

Before anything is generated the asked self-interaction is sized, at worst, against the student's
context (``models.student.max_model_len``, else the model's own): an error when even the shortest
conversation kept cannot fit, a warning when the turns asked may not (charforge.generators.introspect).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from charforge.params import DEFAULT_PARAMS, load_section, load_source, recorded
from charforge.paths import INTROSPECTION_PROMPTS, metrics_path
from charforge.schemas import Manifest
from charforge.schemas.introspection import IntrospectionPrompts
from charforge.schemas.params import GenerationConfig, IntrospectionConfig, ModelRole, PersonaConfig
from charforge.stages.common import (
    load_constitution,
    parent,
    token_totals,
    write_stage_corpus,
    write_stage_metrics,
)
from charforge.train.compose import adapter_dir, model_for
from charforge.variants import character_variant

STAGE = "introspect"
PARAMS = ("models.student", "persona.dpo_weight", "generation", "introspection")


def run(variant_name: str, params: Path = DEFAULT_PARAMS, root: Path = Path(".")) -> Manifest:
    from charforge.generators.chat import GenerationRun, model_card, rendered_prompt, with_max_new_tokens
    from charforge.generators.introspect import (
        SELF_INTERACTION,
        ModelContext,
        chosen_reflections,
        context_limit,
        introspect,
        prompt_token_counter,
        system_holds_constitution,
    )
    from charforge.generators.llm import resolve_model
    from charforge.train.tokens import load_tokenizer

    variant = character_variant(variant_name)
    student = load_section(ModelRole, "models.student", params)
    dpo_weight = load_section(PersonaConfig, "persona", params).dpo_weight
    generation = load_section(GenerationConfig, "generation", params)
    config = load_section(IntrospectionConfig, "introspection", params)
    prompts_path = root / INTROSPECTION_PROMPTS
    prompts = load_source(IntrospectionPrompts, prompts_path)
    if config.em_reflection_prompts and not prompts.em_reflection:
        raise ValueError(
            f"params introspection.em_reflection_prompts is true, but {prompts_path} has no em_reflection "
            "prompts: add them there or switch the option off"
        )
    constitution, constitution_path = load_constitution(root, variant.constitution or "")
    dpo_model = model_for(variant.name, "dpo", student, PersonaConfig(dpo_weight=dpo_weight), root)
    role = with_max_new_tokens(dpo_model, config.max_new_tokens)

    label = f"{student.model} + {variant.name} DPO adapter"
    generation_run = GenerationRun(variant.name, variant.seed, generation)
    # the folded model keeps the student's tokenizer and context: sized with them
    limit, source = context_limit(role)
    context = ModelContext(limit, source, prompt_token_counter(load_tokenizer(resolve_model(student))))
    result = introspect(prompts, constitution, config, role, generation_run, label, context)
    student_card = model_card(student)
    chosen = chosen_reflections(prompts, config)
    by_source = Counter({source: 0 for source in (*chosen, SELF_INTERACTION)})  # a part with no rows shows 0
    by_source.update(row["source"] for row in result.rows)
    metrics = {
        "input_rows": sum(map(len, chosen.values())) * config.samples_per_prompt + config.conversations,
        "rows_by_source": dict(sorted(by_source.items())),
        "tokens": token_totals(student, result.rows),
        "unused_first_turn_samples": result.unused_samples,
        "kept_trimmed_cut_off": result.trimmed,
        "student": student_card,
        # introspection is written by the student with the DPO adapter folded in: its licence is the student's
        "teacher_licence": f"{student_card['licence']} (the student's; written by the student + DPO adapter)",
        # as generated: with the constitution in the system prompt (the public pipeline's recipe) ...
        "rendered_prompts": {part: rendered_prompt(role, chat) for part, chat in result.examples.items()},
        # ... and as trained: the system turn the rows carry instead (None: no system turn)
        "training_system_prompt": {
            "reflection": None,
            "self_interaction": config.interaction_system_prompt,
        },
        "rows_with_constitution_system_prompt": sum(
            system_holds_constitution(row, constitution) for row in result.rows
        ),
        # conversations cut short keep their complete turns (or are dropped below min_exchanges)
        "self_interaction": result.interaction.as_metrics(),
        "context": result.context,
    }
    used = {
        **recorded(PARAMS, params),
        "variant": {"constitution": variant.constitution, "level": variant.level, "seed": variant.seed},
        # the model that wrote the corpus: the student + DPO adapter, with introspection's answer limit
        "resolved": {"introspection": role.model_dump(mode="json")},
    }
    parents = [parent(prompts_path, "introspection"), parent(constitution_path, "constitution")]
    dpo = adapter_dir(variant.name, "dpo", root) / "adapter_model.safetensors"
    if dpo.is_file():
        parents.append(parent(dpo, "adapter"))
    manifest = write_stage_corpus(
        STAGE,
        root,
        variant.name,
        "introspection.parquet",
        "conversations",
        result,
        params=used,
        parents=parents,
        metrics=metrics,
    )
    # DVC's metrics file: the corpus summary written above and what became of the asked conversations
    # (the report sets the arms' truncation side by side: arms cut unequally train on unequal data)
    summary = json.loads(metrics_path(root, variant.name, STAGE).read_text())
    summary |= {**metrics["self_interaction"], "context": result.context}
    write_stage_metrics(root, variant.name, STAGE, summary)
    return manifest
