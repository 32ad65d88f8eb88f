"""Stage `prompts`: contextual prompts for one variant, with their diversity measured.

Reads: params ``PARAMS``; the constitution ``corpora/constitutions/<name>.yaml``,
``corpora/situations.yaml`` and ``models/roles/teacher.json``.
Writes: ``corpora/build/<variant>/prompts.parquet`` with its manifest, and
``metrics/<variant>/diversity.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

from charforge.corpus import write_corpus
from charforge.io import atomic_write_text
from charforge.params import DEFAULT_PARAMS, load_section, load_source, recorded
from charforge.paths import SITUATIONS, build_path, constitution_path, metrics_path
from charforge.schemas import Constitution, Manifest, ParentArtifact
from charforge.schemas.params import GenerationConfig, ModelRole, PromptsConfig
from charforge.schemas.situations import SituationTaxonomy
from charforge.variants import character_variant

PARAMS = ("models.teacher", "generation", "prompts")


def run(variant_name: str, params: Path = DEFAULT_PARAMS, root: Path = Path(".")) -> Manifest:
    from charforge.eval.diversity import diversity_report
    from charforge.generators.chat import GenerationRun
    from charforge.generators.prompts import generate_prompts

    variant = character_variant(variant_name)
    teacher = load_section(ModelRole, "models.teacher", params)
    generation = load_section(GenerationConfig, "generation", params)
    config = load_section(PromptsConfig, "prompts", params)
    source = constitution_path(root, variant.constitution or "")
    situations_path = root / SITUATIONS
    constitution = load_source(Constitution, source)
    taxonomy = load_source(SituationTaxonomy, situations_path)

    generation_run = GenerationRun(variant.name, variant.seed, generation)
    records, rejected, trimmed = generate_prompts(
        constitution, taxonomy, config, variant.level, teacher, generation_run
    )
    diversity = diversity_report(
        [record["prompt"][-1]["content"] for record in records],
        situations=[record["situation"] for record in records],
        trait_ids=[record["trait_id"] for record in records],
    )
    used = {
        **recorded(PARAMS, params),
        "variant": {"constitution": variant.constitution, "level": variant.level, "seed": variant.seed},
    }
    parents = [
        ParentArtifact.for_file(source, "constitution", root),
        ParentArtifact.for_file(situations_path, "situations", root),
    ]
    manifest = write_corpus(
        records,
        build_path(root, variant.name, "prompts.parquet"),
        "prompts",
        params=used,
        parents=parents,
        rejected=dict(rejected),
        variant=variant.name,
        metrics={"diversity": diversity, "kept_trimmed_cut_off": trimmed},
        root=root,
    )
    atomic_write_text(metrics_path(root, variant.name, "diversity"), json.dumps(diversity, indent=2) + "\n")
    return manifest
