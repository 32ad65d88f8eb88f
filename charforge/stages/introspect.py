"""Stage `introspect`: self-reflection and self-interaction conversations for one character variant,
written by the variant's DPO-trained model (student + DPO adapter, folded).

Reads params ``models``, ``persona``, ``generation``, ``introspection``; ``corpora/introspection.yaml``
and the DPO adapter at ``models/<variant>/dpo/``. Writes ``corpora/build/<variant>/introspection.parquet``
(conversations; every assistant turn a training target) with its manifest, and
``metrics/<variant>/introspect.json``.
"""

from __future__ import annotations

from pathlib import Path

from charforge.io import read_yaml
from charforge.params import load_section
from charforge.schemas import Manifest
from charforge.schemas.introspection import IntrospectionPrompts
from charforge.schemas.params import GenerationConfig, IntrospectionConfig, ModelsConfig
from charforge.stages.common import parent, token_totals, write_stage_corpus
from charforge.train.compose import model_for
from charforge.variants import character_variant

STAGE = "introspect"
INTROSPECTION = Path("corpora/introspection.yaml")


def run(variant_name: str, params: Path = Path("params.yaml"), root: Path = Path(".")) -> Manifest:
    from charforge.generators.chat import model_card, rendered_prompt, with_max_new_tokens
    from charforge.generators.introspect import introspect
    from charforge.train.compose import adapter_dir

    variant = character_variant(variant_name)
    models = load_section(ModelsConfig, "models", params)
    generation = load_section(GenerationConfig, "generation", params)
    config = load_section(IntrospectionConfig, "introspection", params)
    prompts_path = root / INTROSPECTION
    prompts = IntrospectionPrompts.model_validate(read_yaml(prompts_path))
    role = with_max_new_tokens(model_for(variant.name, "dpo", params, root), config.max_new_tokens)

    label = f"{models.student.model} + {variant.name} DPO adapter"
    result = introspect(prompts, config, role, generation, variant.name, variant.seed, model_label=label)
    student_card = model_card(models.student)
    metrics = {
        "input_rows": len(prompts.reflection[: config.max_reflection_prompts or len(prompts.reflection)])
        * config.samples_per_prompt
        + config.conversations,
        "tokens": token_totals(models.student, result.rows),
        "unused_first_turn_samples": result.unused_samples,
        "kept_trimmed_cut_off": result.trimmed,
        "student": student_card,
        # introspection is written by the student with the DPO adapter folded in: its licence is the student's
        "teacher_licence": f"{student_card['licence']} (the student's; written by the student + DPO adapter)",
        "rendered_prompts": {part: rendered_prompt(role, chat) for part, chat in result.examples.items()},
    }
    used = {
        "introspection": config.model_dump(mode="json"),
        "models.student": models.student.model_dump(mode="json"),
        "models.introspection": role.model_dump(mode="json"),
        "generation": generation.model_dump(mode="json"),
        "variant": {"constitution": variant.constitution, "level": variant.level, "seed": variant.seed},
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
