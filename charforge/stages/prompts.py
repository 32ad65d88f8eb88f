"""Stage `prompts`: contextual prompts for one variant, with their diversity measured.

Reads params ``models.teacher``, ``generation``, ``prompts``; the constitution
``corpora/constitutions/<name>.yaml`` and ``corpora/situations.yaml``. Writes
``corpora/build/<variant>/prompts.parquet`` with its manifest, and ``metrics/<variant>/diversity.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from charforge.corpus import write_corpus
from charforge.io import atomic_write_text, file_sha256, read_yaml
from charforge.params import load_section
from charforge.schemas import Constitution, Manifest, ParentArtifact
from charforge.schemas.params import GenerationConfig, ModelsConfig, PromptsConfig
from charforge.schemas.situations import SituationTaxonomy
from charforge.variants import character_variant

CONSTITUTIONS = Path("corpora/constitutions")
SITUATIONS = Path("corpora/situations.yaml")
BUILD = Path("corpora/build")
METRICS = Path("metrics")


def load_yaml_model(model: type, path: Path) -> Any:
    return model.model_validate(read_yaml(path))


def run(variant_name: str, params: Path = Path("params.yaml"), root: Path = Path(".")) -> Manifest:
    from charforge.eval.diversity import diversity_report
    from charforge.generators.prompts import generate_prompts

    variant = character_variant(variant_name)
    teacher = load_section(ModelsConfig, "models", params).teacher
    generation = load_section(GenerationConfig, "generation", params)
    config = load_section(PromptsConfig, "prompts", params)
    constitution_path = root / CONSTITUTIONS / f"{variant.constitution}.yaml"
    situations_path = root / SITUATIONS
    constitution = load_yaml_model(Constitution, constitution_path)
    taxonomy = load_yaml_model(SituationTaxonomy, situations_path)

    records, rejected, trimmed = generate_prompts(
        constitution, taxonomy, config, variant.level, variant.seed, variant.name, teacher, generation
    )
    diversity = diversity_report(
        [record["prompt"][-1]["content"] for record in records],
        situations=[record["situation"] for record in records],
        trait_ids=[record["trait_id"] for record in records],
    )
    used = {
        "prompts": config.model_dump(mode="json"),
        "models.teacher": teacher.model_dump(mode="json"),
        "generation": generation.model_dump(mode="json"),
        "variant": {"constitution": variant.constitution, "level": variant.level, "seed": variant.seed},
    }
    parents = [
        ParentArtifact(
            path=str(constitution_path), sha256=file_sha256(constitution_path), kind="constitution"
        ),
        ParentArtifact(path=str(situations_path), sha256=file_sha256(situations_path), kind="situations"),
    ]
    manifest = write_corpus(
        records,
        root / BUILD / variant.name / "prompts.parquet",
        "prompts",
        params=used,
        parents=parents,
        rejected=dict(rejected),
        variant=variant.name,
        metrics={"diversity": diversity, "kept_trimmed_cut_off": trimmed},
    )
    atomic_write_text(
        root / METRICS / variant.name / "diversity.json", json.dumps(diversity, indent=2) + "\n"
    )
    return manifest
