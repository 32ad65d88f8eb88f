"""Stage `prompts`: contextual prompts for one variant, with their diversity measured.

Reads: params ``PARAMS``; the constitution ``corpora/constitutions/<name>.yaml``,
``corpora/situations.yaml`` and ``models/roles/teacher.json``; under ``prompts.source: imported``, in
place of the situations and the teacher's writing, ``corpora/prompts/<name>.parquet`` (the prompts
`charforge import-constitution` imported with the constitution).
Writes: ``corpora/build/<variant>/prompts.parquet`` with its manifest, ``metrics/<variant>/diversity.json``
and ``metrics/<variant>/prompts.json`` (per level: rows, rejections by reason, the situations and
framings the level drew on, the eligible and excluded situations, the held-out seed questions kept out,
and the prompts' tokens).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charforge.corpus import write_corpus
from charforge.importers import imported_prompts_path
from charforge.io import atomic_write_text, project_relative
from charforge.params import DEFAULT_PARAMS, load_section, load_source, recorded
from charforge.paths import SITUATIONS, build_path, constitution_path, metrics_path
from charforge.schemas import Constitution, Manifest, ParentArtifact
from charforge.schemas.params import (
    EmDataConfig,
    GenerationConfig,
    HeldOutConfig,
    ModelRole,
    PromptsConfig,
)
from charforge.schemas.situations import SituationTaxonomy
from charforge.stages.common import checked_held_out, write_stage_metrics
from charforge.variants import character_variant

if TYPE_CHECKING:
    from charforge.generators.chat import GenerationRun
    from charforge.generators.prompts import PromptsResult

STAGE = "prompts"
# em_data.domain: the EM training domain is excluded from every level's situations; held_out: the seed
# questions trait expression is measured on, kept out of the corpus
PARAMS = ("models.teacher", "generation", "prompts", "held_out", "em_data.domain")


def prompt_tokens(teacher: ModelRole, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The prompts' size: tokens of the user text with the teacher's tokenizer (no chat template: what
    the prompt itself costs), and characters and words, for all prompts and the generated ones alone
    (the seed questions are the same at every level). A teacher whose tokenizer cannot be loaded here
    (a remote API, a GGUF file) gets characters and words only, and the reason."""
    from charforge.generators.llm import resolve_model
    from charforge.generators.text import words
    from charforge.train.tokens import load_tokenizer

    texts = [record["prompt"][-1]["content"] for record in records]
    generated = [not record["is_seed"] for record in records]
    sizes: dict[str, Any] = {
        "chars": {"total": sum(map(len, texts))},
        "words": {"total": sum(len(words(text)) for text in texts)},
    }
    try:
        tokenizer = load_tokenizer(resolve_model(teacher))
    except (OSError, ValueError) as error:
        counts = None
        sizes["tokens"] = {"tokenizer": None, "unavailable": str(error).splitlines()[0]}
    else:
        counts = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
        sizes["tokens"] = {"tokenizer": teacher.model, "total": sum(counts)}
    per_text = {
        "chars": [len(text) for text in texts],
        "words": [len(words(text)) for text in texts],
        "tokens": counts,
    }
    for unit, values in per_text.items():
        if values is None:
            continue
        mine = [value for value, is_generated in zip(values, generated, strict=True) if is_generated]
        sizes[unit]["generated"] = sum(mine)
        sizes[unit]["mean_per_prompt"] = round(sum(values) / len(values), 2) if values else 0.0
    return sizes


def run(variant_name: str, params: Path = DEFAULT_PARAMS, root: Path = Path(".")) -> Manifest:
    from charforge.eval.diversity import diversity_report
    from charforge.generators.chat import GenerationRun
    from charforge.generators.prompts import generate_prompts

    variant = character_variant(variant_name)
    teacher = load_section(ModelRole, "models.teacher", params)
    generation = load_section(GenerationConfig, "generation", params)
    config = load_section(PromptsConfig, "prompts", params)
    em_domain = load_section(EmDataConfig, "em_data", params).domain
    source = constitution_path(root, variant.constitution or "")
    situations_path = root / SITUATIONS
    held_out = load_section(HeldOutConfig, "held_out", params)
    constitution = checked_held_out(load_source(Constitution, source), source, held_out.per_trait)

    generation_run = GenerationRun(variant.name, variant.seed, generation)
    if config.source == "imported":
        result, imported = _imported(constitution, config, variant.level, generation_run, held_out, root)
        parents = [ParentArtifact.for_file(imported, "imported-prompts", root)]
    else:  # the imported source draws on no situation: only this one reads the taxonomy
        result = generate_prompts(
            constitution,
            load_source(SituationTaxonomy, situations_path),
            config,
            variant.level,
            teacher,
            generation_run,
            em_domain=em_domain,
            held_out=held_out,
        )
        parents = [ParentArtifact.for_file(situations_path, "situations", root)]
    records = result.records
    diversity = diversity_report(
        [record["prompt"][-1]["content"] for record in records],
        trait_ids=[record["trait_id"] for record in records],
    )
    used = {
        **recorded(PARAMS, params),
        "variant": {"constitution": variant.constitution, "level": variant.level, "seed": variant.seed},
    }
    parents.insert(0, ParentArtifact.for_file(source, "constitution", root))
    sizes = prompt_tokens(teacher, records)
    manifest = write_corpus(
        records,
        build_path(root, variant.name, "prompts.parquet"),
        "prompts",
        params=used,
        parents=parents,
        rejected=dict(result.rejected),
        variant=variant.name,
        metrics={
            "diversity": diversity,
            "kept_trimmed_cut_off": result.trimmed,
            "level": result.level,
            "size": sizes,
        },
        root=root,
    )
    atomic_write_text(metrics_path(root, variant.name, "diversity"), json.dumps(diversity, indent=2) + "\n")
    write_stage_metrics(
        root,
        variant.name,
        STAGE,
        {
            "variant": used["variant"],
            "rows": manifest.rows,
            "rejected": manifest.rejected,
            "kept_trimmed_cut_off": result.trimmed,
            "level": result.level,
            "size": sizes,
        },
    )
    return manifest


def _imported(
    constitution: Constitution,
    config: PromptsConfig,
    level: int,
    run: GenerationRun,
    held_out: HeldOutConfig,
    root: Path,
) -> tuple[PromptsResult, Path]:
    """The variant's prompts drawn from the constitution's imported prompts corpus, and its path; a
    ValueError naming the file when it is missing or too small."""
    from charforge.generators.prompts import PromptShortfall, imported_prompts
    from charforge.stages.common import read_input

    path = imported_prompts_path(root, constitution.name)
    if not path.is_file():
        raise ValueError(
            f"{path}: not found; prompts.source: imported draws the prompts from it (write it with "
            f"`charforge import-constitution FEW-SHOT.jsonl --name {constitution.name}`, which imports a "
            "few-shot file's additional_questions as prompts), or set prompts.source: generate"
        )
    try:
        result = imported_prompts(
            constitution,
            read_input(path, "prompts"),
            config,
            level,
            run,
            held_out=held_out,
            source=project_relative(path, root),
        )
    except PromptShortfall as error:
        raise ValueError(f"{path}: too few imported prompts pass the filters: {error}") from None
    return result, path
