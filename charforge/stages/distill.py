"""Stage `distill`: preference pairs for one character variant (chosen = teacher in character).

Reads: params ``PARAMS``; ``corpora/build/<variant>/prompts.parquet``, the variant's constitution and
``models/roles/{teacher,student}.json``.
Writes: ``corpora/build/<variant>/pairs.parquet`` with its manifest (rejections by reason, teacher and
licence, the prompts as each model saw them, token totals) and ``metrics/<variant>/distill.json``.
"""

from __future__ import annotations

from pathlib import Path

from charforge.params import DEFAULT_PARAMS, load_section, recorded
from charforge.paths import build_path
from charforge.schemas import Manifest
from charforge.schemas.params import DistillConfig, GenerationConfig, ModelRole
from charforge.stages.common import load_constitution, parent, read_input, token_totals, write_stage_corpus
from charforge.variants import character_variant

STAGE = "distill"
PARAMS = ("models.teacher", "models.student", "generation", "distill")


def run(variant_name: str, params: Path = DEFAULT_PARAMS, root: Path = Path(".")) -> Manifest:
    from charforge.generators.chat import GenerationRun, model_card, rendered_prompt, with_max_new_tokens
    from charforge.generators.distill import distill_pairs

    variant = character_variant(variant_name)
    teacher_role = load_section(ModelRole, "models.teacher", params)
    student_role = load_section(ModelRole, "models.student", params)
    generation = load_section(GenerationConfig, "generation", params)
    config = load_section(DistillConfig, "distill", params)
    constitution, constitution_path = load_constitution(root, variant.constitution or "")
    prompts_path = build_path(root, variant.name, "prompts.parquet")
    prompts = read_input(prompts_path, "prompts")

    generation_run = GenerationRun(variant.name, variant.seed, generation)
    result, examples = distill_pairs(
        prompts, constitution, config, teacher_role, student_role, generation_run
    )
    teacher = with_max_new_tokens(teacher_role, config.max_new_tokens)
    student = with_max_new_tokens(student_role, config.max_new_tokens)
    teacher_card = model_card(teacher)
    metrics = {
        "input_rows": len(prompts),
        "tokens": token_totals(student_role, result.rows),
        "self_name_replacements": result.self_name_replacements,
        "kept_trimmed_cut_off": result.trimmed,
        "teacher": teacher_card,
        "teacher_licence": teacher_card["licence"],
        "student": model_card(student),
        "rendered_prompts": {
            "teacher": rendered_prompt(teacher, examples["teacher"]),
            "student": rendered_prompt(student, examples["student"]),
        },
    }
    used = {
        **recorded(PARAMS, params),
        "variant": {"constitution": variant.constitution, "level": variant.level, "seed": variant.seed},
        # the roles as they answered: each with the distill section's answer limit
        "resolved": {"teacher": teacher.model_dump(mode="json"), "student": student.model_dump(mode="json")},
    }
    return write_stage_corpus(
        STAGE,
        root,
        variant.name,
        "pairs.parquet",
        "pairs",
        result,
        params=used,
        parents=[parent(prompts_path, "prompts"), parent(constitution_path, "constitution")],
        metrics=metrics,
    )
