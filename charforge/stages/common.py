"""What the corpus stages (distill, introspect, control-data, em-data) share: where corpora live, their
inputs read back validated, token totals counted with the student's chat template, and the metrics
file every stage writes beside its manifest."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from charforge.io import atomic_write_text
from charforge.params import load_section, load_source
from charforge.paths import build_path, constitution_path, metrics_path
from charforge.schemas import Constitution, Manifest, ParentArtifact
from charforge.schemas.params import ModelRole, PersonaConfig
from charforge.variants import Variant


def read_input(path: Path, kind: str) -> list[dict[str, Any]]:
    """The rows of a corpus another stage wrote, after `charforge validate` passed it (manifest too)."""
    from charforge.train.data import read_corpus

    return read_corpus(path, kind)


def parent(path: Path, kind: str) -> ParentArtifact:
    """``path`` as a parent artifact, pinned by its sha256 (``write_stage_corpus`` records it relative
    to the project)."""
    return ParentArtifact.for_file(path, kind)


def persona_params(variant: Variant) -> tuple[str, ...]:
    """The ``persona`` keys the persona of ``variant`` depends on: both adapter weights for a character
    variant and for a ``plain-lora`` / ``hhh`` control (its ``dpo-slot`` and SFT adapters fold in with the
    character arm's weights, docs/design.md §2), none for the baseline (the plain student). A stage
    declares exactly these, so sweeping a weight never reruns the baseline."""
    return () if variant.kind == "baseline" else ("persona",)


def persona_config(variant: Variant, params: Path) -> PersonaConfig:
    """The persona weights of ``variant``, read from the keys ``persona_params`` names only."""
    if not persona_params(variant):
        return PersonaConfig()
    return load_section(PersonaConfig, "persona", params)


def load_constitution(root: Path, name: str) -> tuple[Constitution, Path]:
    path = constitution_path(root, name)
    return load_source(Constitution, path), path


def checked_held_out(constitution: Constitution, path: Path, per_trait: int) -> Constitution:
    """``constitution`` (read from ``path``) once ``held_out.per_trait`` is known to leave every trait a
    seed question to train on; a ValueError naming the file and the trait's questions otherwise."""
    for index, trait in enumerate(constitution.traits):
        try:
            constitution.held_out(trait, per_trait)
        except ValueError as error:
            raise ValueError(f"{path}: traits.{index}.questions: {error}") from None
    return constitution


def token_totals(student: ModelRole, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Training tokens of ``rows`` as the student's trainer sees them (charforge.train.tokens)."""
    from charforge.generators.llm import resolve_model
    from charforge.train.tokens import load_tokenizer, rows_tokens

    counts = rows_tokens(load_tokenizer(resolve_model(student)), rows)
    total = sum(counts)
    return {
        "total": total,
        "rows": len(counts),
        "mean_per_row": round(total / len(counts), 2) if counts else 0.0,
        "tokenizer": student.model,
    }


def write_stage_metrics(root: Path, variant: str, stage: str, metrics: Mapping[str, Any]) -> Path:
    """``metrics/<variant>/<stage>.json`` (atomically)."""
    path = metrics_path(root, variant, stage)
    atomic_write_text(path, json.dumps(metrics, indent=2, sort_keys=True, default=str) + "\n")
    return path


def write_stage_corpus(
    stage: str,
    root: Path,
    variant: str,
    file_name: str,
    kind: str,
    result: Any,
    *,
    params: Mapping[str, Any],
    parents: Sequence[ParentArtifact],
    metrics: Mapping[str, Any],
) -> Manifest:
    """Write a corpus stage's rows (``result.rows``, rejections by reason in ``result.rejected``) with
    their manifest under ``corpora/build/<variant>/``, and the stage's ``metrics/<variant>/<stage>.json``."""
    from charforge.corpus import write_corpus

    manifest = write_corpus(
        result.rows,
        build_path(root, variant, file_name),
        kind,
        params=params,
        parents=parents,
        rejected=dict(result.rejected),
        variant=variant,
        metrics=metrics,
        root=root,
    )
    summary = {"rows": manifest.rows, "rejected": manifest.rejected, "tokens": metrics["tokens"]}
    if "kept_trimmed_cut_off" in metrics:  # cut-off answers kept, trimmed to a full sentence
        summary["kept_trimmed_cut_off"] = metrics["kept_trimmed_cut_off"]
    if "skipped" in metrics:  # nothing generated, and why
        summary["skipped"] = metrics["skipped"]
    write_stage_metrics(root, variant, stage, summary)
    return manifest
