"""Stage `distill`: preference pairs for one character variant (chosen = teacher in character).

Reads params ``models``, ``generation``, ``distill``; ``corpora/build/<variant>/prompts.parquet`` and
the variant's constitution. Writes ``corpora/build/<variant>/pairs.parquet`` with its manifest
(rejections by reason, teacher and licence, the prompts as each model saw them, token totals) and
``metrics/<variant>/distill.json``.
"""

from __future__ import annotations

from pathlib import Path

from charforge.params import load_section
from charforge.schemas import Manifest
from charforge.schemas.params import DistillConfig, GenerationConfig, ModelsConfig
from charforge.stages.common import (
    build_path,
    load_constitution,
    parent,
    read_input,
    token_totals,
    write_stage_corpus,
)
from charforge.variants import character_variant

STAGE = "distill"


def run(variant_name: str, params: Path = Path("params.yaml"), root: Path = Path(".")) -> Manifest:
    from charforge.generators.chat import model_card, rendered_prompt, with_max_new_tokens
    from charforge.generators.distill import distill_pairs

    variant = character_variant(variant_name)
    models = load_section(ModelsConfig, "models", params)
    generation = load_section(GenerationConfig, "generation", params)
    config = load_section(DistillConfig, "distill", params)
    constitution, constitution_path = load_constitution(root, variant.constitution or "")
    prompts_path = build_path(root, variant.name, "prompts.parquet")
    prompts = read_input(prompts_path, "prompts")

    result, examples = distill_pairs(
        prompts, constitution, config, models.teacher, models.student, generation, variant.name, variant.seed
    )
    teacher = with_max_new_tokens(models.teacher, config.max_new_tokens)
    student = with_max_new_tokens(models.student, config.max_new_tokens)
    teacher_card = model_card(teacher)
    metrics = {
        "input_rows": len(prompts),
        "tokens": token_totals(models.student, result.rows),
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
        "distill": config.model_dump(mode="json"),
        "models.teacher": teacher.model_dump(mode="json"),
        "models.student": student.model_dump(mode="json"),
        "generation": generation.model_dump(mode="json"),
        "variant": {"constitution": variant.constitution, "level": variant.level, "seed": variant.seed},
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
