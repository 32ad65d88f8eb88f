"""Stage `introspect`: self-reflection and self-interaction conversations for one character variant,
written by the variant's DPO-trained model (student + DPO adapter, folded).

Reads: params ``PARAMS``; ``corpora/introspection.yaml``, the DPO adapter at ``models/<variant>/dpo/``
and ``models/roles/student.json``.
Writes: ``corpora/build/<variant>/introspection.parquet`` (conversations; every assistant turn a
training target) with its manifest, and ``metrics/<variant>/introspect.json``.
"""

from __future__ import annotations

from pathlib import Path

from charforge.params import DEFAULT_PARAMS, load_section, load_source, recorded
from charforge.paths import INTROSPECTION_PROMPTS
from charforge.schemas import Manifest
from charforge.schemas.introspection import IntrospectionPrompts
from charforge.schemas.params import GenerationConfig, IntrospectionConfig, ModelRole, PersonaConfig
from charforge.stages.common import parent, token_totals, write_stage_corpus
from charforge.train.compose import adapter_dir, model_for
from charforge.variants import character_variant

STAGE = "introspect"
PARAMS = ("models.student", "persona.dpo_weight", "generation", "introspection")


def run(variant_name: str, params: Path = DEFAULT_PARAMS, root: Path = Path(".")) -> Manifest:
    from charforge.generators.chat import GenerationRun, model_card, rendered_prompt, with_max_new_tokens
    from charforge.generators.introspect import introspect

    variant = character_variant(variant_name)
    student = load_section(ModelRole, "models.student", params)
    dpo_weight = load_section(PersonaConfig, "persona", params).dpo_weight
    generation = load_section(GenerationConfig, "generation", params)
    config = load_section(IntrospectionConfig, "introspection", params)
    prompts_path = root / INTROSPECTION_PROMPTS
    prompts = load_source(IntrospectionPrompts, prompts_path)
    dpo_model = model_for(variant.name, "dpo", student, PersonaConfig(dpo_weight=dpo_weight), root)
    role = with_max_new_tokens(dpo_model, config.max_new_tokens)

    label = f"{student.model} + {variant.name} DPO adapter"
    generation_run = GenerationRun(variant.name, variant.seed, generation)
    result = introspect(prompts, config, role, generation_run, model_label=label)
    student_card = model_card(student)
    metrics = {
        "input_rows": len(prompts.reflection[: config.max_reflection_prompts or len(prompts.reflection)])
        * config.samples_per_prompt
        + config.conversations,
        "tokens": token_totals(student, result.rows),
        "unused_first_turn_samples": result.unused_samples,
        "kept_trimmed_cut_off": result.trimmed,
        "student": student_card,
        # introspection is written by the student with the DPO adapter folded in: its licence is the student's
        "teacher_licence": f"{student_card['licence']} (the student's; written by the student + DPO adapter)",
        "rendered_prompts": {part: rendered_prompt(role, chat) for part, chat in result.examples.items()},
    }
    used = {
        **recorded(PARAMS, params),
        "variant": {"constitution": variant.constitution, "level": variant.level, "seed": variant.seed},
        # the model that wrote the corpus: the student + DPO adapter, with introspection's answer limit
        "resolved": {"introspection": role.model_dump(mode="json")},
    }
    parents = [parent(prompts_path, "introspection")]
    dpo = adapter_dir(variant.name, "dpo", root) / "adapter_model.safetensors"
    if dpo.is_file():
        parents.append(parent(dpo, "adapter"))
    return write_stage_corpus(
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
