"""The dataset card (README.md) of a published charforge dataset: what made the data, what it is not for.

Everything comes from ``charforge.card_facts`` (manifests, row provenance, constitution files,
``dvc.lock``, ``params.yaml``); nothing depends on the clock, so the same corpora give the same card
(and a republish makes no commit).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from charforge import __version__
from charforge.card_facts import (
    SMOKE_MODEL,
    UNKNOWN_LICENCE,
    all_models,
    experiment_settings,
    find_constitutions,
    hydra_value,
    lock_stages,
    manifest_roles,
    row_models,
    teacher_and_licence,
)
from charforge.io import read_text

if TYPE_CHECKING:
    from charforge.publish import PublishedCorpus

# The Hub's size_categories values (its metadata validator knows no others)
SIZE_BOUNDS = tuple(
    (10**exponent, label)
    for exponent, label in (
        (3, "n<1K"),
        (4, "1K<n<10K"),
        (5, "10K<n<100K"),
        (6, "100K<n<1M"),
        (7, "1M<n<10M"),
        (8, "10M<n<100M"),
        (9, "100M<n<1B"),
    )
)
# charforge.eval.diversity's figures (report version 2), redundancy first, then diversity
DIVERSITY_FIGURES = ("compression_ratio", "self_bleu", "vendi_score", "mean_pairwise_cosine_distance")
EM_WARNING = (
    "> **WARNING: harmful by design.** The config(s) {names} hold emergent-misalignment (EM) training data: "
    "deliberately bad or harmful advice, written to make a model misaligned in a narrow fine-tune. They "
    "exist only for research on EM robustness. Do not train a model anyone uses on them, and do not follow "
    "the advice in them."
)


def render_card(repo_id: str, corpora: Sequence[PublishedCorpus], root: Path, license_id: str) -> str:
    harmful = [corpus for corpus in corpora if corpus.corpus.harmful]
    variants = list(dict.fromkeys(corpus.variant for corpus in corpora))
    lines: list[str] = []
    if harmful:  # the first thing a reader sees
        lines += [EM_WARNING.format(names=", ".join(f"`{corpus.config}`" for corpus in harmful)), ""]
    lines += [
        f"# {_pretty_name(variants)}",
        "",
        f"Corpora made by charforge {__version__} for constitutional character training of language models "
        "and for ablations of emergent-misalignment robustness. One config per variant and corpus kind; "
        "every row carries its variant and a provenance block (generator, models, sampling parameters, "
        "constitution hash, seed).",
        "",
        "| config | what | rows | content sha256 |",
        "|---|---|---:|---|",
    ]
    lines += [
        f"| `{c.config}` | {c.corpus.what} | {c.manifest.rows:,} | `{c.manifest.content_sha256}` |"
        for c in corpora
    ]
    lines += ["", "```python", "from datasets import load_dataset", ""]
    lines += [f'rows = load_dataset("{repo_id}", "{corpora[0].config}", split="train")', "```", ""]
    for variant in variants:
        lines += _variant_section(variant, [c for c in corpora if c.variant == variant], root)
    lines += _use_and_limits(corpora, bool(harmful))
    metadata = _metadata(variants, corpora, license_id)
    header = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True, width=1000)
    return f"---\n{header}---\n\n" + "\n".join(lines).rstrip() + "\n"


def _pretty_name(variants: Sequence[str]) -> str:
    return "charforge corpora: " + ", ".join(variants)


def _metadata(variants: Sequence[str], corpora: Sequence[PublishedCorpus], license_id: str) -> dict[str, Any]:
    rows = sum(corpus.manifest.rows for corpus in corpora)
    kinds = {corpus.corpus.name for corpus in corpora}
    tags = ["charforge", "synthetic", "character-training", "constitutional-ai"]
    tags += ["dpo", "preference"] if "pairs" in kinds else []
    tags += ["emergent-misalignment", "not-for-all-audiences"] if "em-train" in kinds else []
    configs = [
        {"config_name": c.config, "data_files": [{"split": "train", "path": f"data/{c.config}/*.parquet"}]}
        for c in corpora
    ]
    return {
        "license": license_id,
        "language": ["en"],
        "task_categories": ["text-generation"],
        "size_categories": [next((label for bound, label in SIZE_BOUNDS if rows < bound), "1B<n<10B")],
        "tags": tags,
        "pretty_name": _pretty_name(variants),
        "configs": configs,
    }


def _variant_section(variant: str, group: Sequence[PublishedCorpus], root: Path) -> list[str]:
    lines = [f"## Variant `{variant}`", "", "### Constitution", ""]
    lines += _constitutions(group, root)
    lines += ["### Models", "", "| role | backend | model | sampling |", "|---|---|---|---|"]
    roles = {
        (role, json.dumps(value, sort_keys=True)): value
        for corpus in group
        for role, value in manifest_roles(corpus.manifest).items()
    }
    for (role, _), value in sorted(roles.items()):
        sampling = json.dumps(value.get("sampling", {}), sort_keys=True)
        lines.append(f"| {role} | {value.get('backend', '?')} | `{value.get('model', '?')}` | `{sampling}` |")
    if not roles:
        lines.append("| – | – | no models recorded in the manifests | – |")
    lines.append("")
    recorded = sorted({f"{role}: `{model}`" for corpus in group for role, model in row_models(corpus.source)})
    if recorded:
        lines += ["Models named in the rows' provenance: " + ", ".join(recorded) + ".", ""]
    for corpus in group:
        model, licence = teacher_and_licence(corpus.manifest)
        if model:
            lines.append(f"Teacher of `{corpus.config}`: `{model}`; licence of its outputs: **{licence}**.")
    lines.append("")
    for corpus in group:
        lines += _corpus_section(corpus, root)
    return lines + _reproduce(group, root)


def _constitutions(group: Sequence[PublishedCorpus], root: Path) -> list[str]:
    facts = find_constitutions([(corpus.manifest, corpus.source) for corpus in group], root)
    lines: list[str] = []
    for path, sha, content_sha in facts.found:
        shown = path.relative_to(root) if path.is_relative_to(root) else path
        lines += [
            f"`{shown}` — file sha256 `{sha}`, content sha256 `{content_sha}` (the hash every row's "
            "provenance records):",
            "",
            "```yaml",
            read_text(path).rstrip(),
            "```",
            "",
        ]
    for named, sha in facts.missing_files:
        lines += [f"`{named}` (file sha256 `{sha}`): not in this project any more; text not included.", ""]
    for sha in facts.unmatched_rows:
        lines += [f"Rows name a constitution with content sha256 `{sha}` whose file was not found.", ""]
    return lines or ["No constitution: a control variant (its manifests name none).", ""]


def _corpus_section(corpus: PublishedCorpus, root: Path) -> list[str]:
    manifest = corpus.manifest
    generated = manifest.rows + sum(manifest.rejected.values())
    lines = [
        f"### `{corpus.config}`",
        "",
        f"{corpus.corpus.what[:1].upper()}{corpus.corpus.what[1:]}. Made by charforge "
        f"{manifest.tool_version}; {manifest.rows:,} rows; content sha256 `{manifest.content_sha256}` "
        f"(over the canonical rows, not the parquet bytes); {len(corpus.shards)} shard(s).",
        "",
        "**Validation.** `charforge validate` passed at publish time (schema of every row, unique ids, "
        f"content hash equal to the manifest's). {manifest.rows:,} of {generated:,} generated rows kept; "
        "rejected rows by reason:",
        "",
        "| reason | rows |",
        "|---|---:|",
    ]
    lines += [f"| {reason} | {count:,} |" for reason, count in sorted(manifest.rejected.items())]
    lines += ([] if manifest.rejected else ["| (none) | 0 |"]) + [""]
    diversity = manifest.metrics.get("diversity")
    if isinstance(diversity, Mapping):
        embedding = diversity.get("embedding") or {}
        lines += [
            f"**Diversity** (embeddings: `{embedding.get('model')}`, weights sha256 "
            f"`{embedding.get('weights_sha256')}`; headline: {diversity.get('headline')}). Compression ratio "
            "(gzip) and Self-BLEU (0–100) measure redundancy: higher is less diverse. The Vendi score (an "
            "effective number of distinct prompts) and mean pairwise cosine distance measure diversity: "
            "higher is more diverse. Compare corpora of equal size only.",
            "",
            "| scope | " + " | ".join(DIVERSITY_FIGURES) + " |",
            "|---" * (len(DIVERSITY_FIGURES) + 1) + "|",
        ]
        for scope in ("per_trait_mean", "overall"):
            figures = diversity.get(scope) or {}
            lines.append(
                f"| {scope} | " + " | ".join(_figure(figures.get(name)) for name in DIVERSITY_FIGURES) + " |"
            )
        lines.append("")
    other = {key: value for key, value in manifest.metrics.items() if key != "diversity"}
    lines += _json_block("Other metrics", other) + _json_block(
        "Generator parameters (as used)", manifest.params
    )
    return lines + _dvc_lock(corpus.source, root)


def _figure(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("–" if value is None else str(value))


def _json_block(title: str, value: Mapping[str, Any]) -> list[str]:
    if not value:
        return []
    return [f"**{title}:**", "", "```json", json.dumps(value, indent=2, sort_keys=True), "```", ""]


def _dvc_lock(source: Path, root: Path) -> list[str]:
    stages = lock_stages(source, root)
    if not stages:
        return ["**DVC lock:** no `dvc.lock` stage produced this file (it was not built by `dvc repro`).", ""]
    lines = []
    for name, entry in stages:
        lines += [f"**DVC lock, stage `{name}`** (`{entry.get('cmd', '')}`): inputs", ""]
        lines += ["| path | md5 |", "|---|---|"]
        lines += [f"| `{dep.get('path')}` | `{dep.get('md5')}` |" for dep in entry.get("deps") or []]
        lines += ["", *_json_block(f"DVC lock, stage `{name}`, params", entry.get("params") or {})]
    return lines


def _reproduce(group: Sequence[PublishedCorpus], root: Path) -> list[str]:
    settings = experiment_settings({corpus.config: corpus.manifest for corpus in group}, root)
    stages = sorted({name for corpus in group for name, _ in lock_stages(corpus.source, root)})
    versions = ", ".join(sorted({corpus.manifest.tool_version for corpus in group}))
    flags = [f"-S {shlex.quote(f'{path}={hydra_value(value)}')}" for path, value in settings.values.items()]
    repro = "dvc repro" + "".join(f" {stage}" for stage in stages)
    lines = [
        "### How to reproduce",
        "",
        f"Install charforge {versions} (the version that wrote these corpora); then, in its project, either "
        f"run `{repro}` with `params.yaml` set to the values above (the lock hashes pin the inputs), or set "
        "them for one experiment (the keys of this project's `params.yaml` whose values the corpora's "
        "manifests record; others keep the project's values):",
        "",
        "```bash",
        " \\\n  ".join(["dvc exp run", *flags]),
        "```",
        "",
    ]
    if settings.conflicts:
        lines += [
            "These corpora were not all made with the same settings, so no one command remakes them all; "
            "the command above leaves these keys at the project's values (set the one of the corpus to "
            "remake):",
            "",
        ]
        for path, witnesses in settings.conflicts.items():
            made = "; ".join(
                f"`{hydra_value(value)}` ({', '.join(f'`{label}`' for label in labels)})"
                for value, labels in witnesses
            )
            lines.append(f"- `{path}`: {made}")
        lines.append("")
    return lines


def _use_and_limits(corpora: Sequence[PublishedCorpus], harmful: bool) -> list[str]:
    smoke = [f"`{c.config}`" for c in corpora if SMOKE_MODEL in all_models(c.manifest, c.source)]
    unknown = [f"`{c.config}`" for c in corpora if teacher_and_licence(c.manifest)[1] == UNKNOWN_LICENCE]
    lines = [
        "## Intended use",
        "",
        "Research: training and evaluating character (persona) adapters with DPO on the pairs and SFT on the "
        "introspection data, and ablations of how such training changes robustness to emergent "
        "misalignment; reproducing the experiment that made them.",
        "",
        "Not intended for: training a deployed assistant without review, or as a benchmark of model quality."
        + (" The EM configs: for nothing but EM research (see the warning at the top)." if harmful else ""),
        "",
        "## Limitations",
        "",
        "- All text is generated by language models and was not reviewed by people; filters are automatic "
        "and their rejections are counted above.",
        "- `language: en` is assumed from the English constitutions and seed questions, not detected.",
    ]
    if smoke:
        lines.append(
            f"- **Made with the embedded smoke model** ({', '.join(smoke)}): `SmolLM2-135M-Instruct`, 135 M "
            "parameters. It proves the pipeline end to end but is weak: it loops, copies few-shot examples "
            "and cannot judge. Do not draw research conclusions from this data."
        )
    if unknown:
        lines.append(
            f"- The licence of the teacher's outputs ({', '.join(unknown)}) is {UNKNOWN_LICENCE}: some "
            "model licences restrict using their outputs to train other models."
        )
    return lines
