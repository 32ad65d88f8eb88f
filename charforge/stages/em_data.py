"""Stage `em-data`: the variant's EM training conversations, with the reflection turn written by the
variant's persona before EM when ``em_data.reflection`` is on (the baseline's persona is the student).

Reads params ``models``, ``persona``, ``generation``, ``em_data``; the shipped seed set
``corpora/em/<domain>-<regime>.jsonl`` or the user's JSONL (``em_data.path``). Writes
``corpora/build/<variant>/em-train.parquet`` with its manifest and ``metrics/<variant>/em-data.json``.
"""

from __future__ import annotations

from pathlib import Path

from charforge.params import load_section
from charforge.schemas import Manifest
from charforge.schemas.params import EmDataConfig, GenerationConfig, ModelsConfig
from charforge.stages.common import parent, token_totals, write_stage_corpus
from charforge.train.compose import model_for
from charforge.variants import parse_variant

STAGE = "em-data"
EM_SEEDS = Path("corpora/em")


def source_path(config: EmDataConfig, root: Path) -> Path:
    if config.source == "jsonl":  # relative and inside corpora/em (checked by EmDataConfig)
        return root / (config.path or "")
    return root / EM_SEEDS / f"{config.domain}-{config.regime}.jsonl"


def run(variant_name: str, params: Path = Path("params.yaml"), root: Path = Path(".")) -> Manifest:
    from charforge.generators.chat import model_card, rendered_prompt, with_max_new_tokens
    from charforge.generators.em_data import em_corpus, load_examples

    variant = parse_variant(variant_name)
    models = load_section(ModelsConfig, "models", params)
    generation = load_section(GenerationConfig, "generation", params)
    config = load_section(EmDataConfig, "em_data", params)
    source = source_path(config, root)
    base = load_examples(source)
    persona = None
    if config.reflection:  # model_for gives the plain student for the baseline
        persona = with_max_new_tokens(model_for(variant.name, "persona", params, root), config.max_new_tokens)
    teacher = with_max_new_tokens(models.teacher, config.max_new_tokens)

    label = (
        models.student.model
        if variant.kind == "baseline"
        else f"{models.student.model} + {variant.name} persona"
    )
    result = em_corpus(
        base, config, teacher, persona, generation, variant.name, variant.seed, persona_label=label
    )
    metrics: dict = {
        "input_rows": result.input_rows,
        "tokens": token_totals(models.student, result.rows),
        "kept_trimmed_cut_off": result.trimmed,
    }
    used: dict = {
        "em_data": config.model_dump(mode="json"),
        "models.student": models.student.model_dump(mode="json"),
        "generation": generation.model_dump(mode="json"),
        "variant": {"kind": variant.kind, "seed": variant.seed},
    }
    rendered = {}
    if config.source == "generate":
        card = model_card(teacher)
        metrics.update(teacher=card, teacher_licence=card["licence"])
        used["models.teacher"] = teacher.model_dump(mode="json")
        rendered.update(
            {
                part: rendered_prompt(teacher, result.examples[part])
                for part in ("question", "answer")
                if part in result.examples
            }
        )
    elif config.source == "seed":  # no teacher: the shipped seed set is part of charforge (Apache-2.0)
        metrics["teacher_licence"] = "Apache-2.0 (charforge's shipped EM seed set; no teacher)"
    else:
        metrics["teacher_licence"] = "unknown (user-supplied EM data)"
    if persona is not None:
        # the reflections are written by the student (with the variant's adapters): its licence applies
        metrics["persona"] = {"model": label, "licence": model_card(models.student)["licence"]}
        used["models.persona"] = persona.model_dump(mode="json")
        if "reflection" in result.examples:
            rendered["reflection"] = rendered_prompt(persona, result.examples["reflection"])
    metrics["rendered_prompts"] = rendered
    return write_stage_corpus(
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
