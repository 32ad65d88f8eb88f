"""The report: every variant's EM metrics in one markdown file with PNG plots (docs/design.md §2, §5).

Gathers ``metrics/<variant>/eval-em.json`` and adds what needs more than one variant: paired contrasts
against the baseline of the same seed (and, for character variants, against the other controls),
resampling the questions both answered; seed-to-seed spread of variants that differ only in seed;
and per constitution the slope of post-EM alignment against diversity level with its interval (H1 is
a dose-response question). A variant whose judge failed validation is marked in every table and
plot, and the report opens with that warning: such figures are no verdict.

Input columns: the ``eval-em.json`` metrics of each variant.

Output columns: ``reports/report.md``, ``reports/summary.json`` and PNG plots beside them.

Runtime parameters: ``eval.bootstrap_resamples``, ``eval.confidence``, ``eval.seed``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from charforge.eval import plots
from charforge.eval import report_markdown as md
from charforge.eval.metrics import dose_response, paired_contrast, seed_spread
from charforge.io import atomic_write_text

KIND_ORDER = {"baseline": 0, "plain-lora": 1, "hhh": 2, "character": 3}
CONTRAST_STATS = ("aligned_mean", "share_aligned_le_30", "em_rate_b")
SEED_RE = re.compile(r"-s[0-9]+$")


def gather(metrics_dir: Path) -> list[dict[str, Any]]:
    """Every variant's eval-em metrics, baseline and controls first, then by constitution/level/seed."""
    found = [
        json.loads(path.read_text(encoding="utf-8")) for path in sorted(metrics_dir.glob("*/eval-em.json"))
    ]
    return sorted(
        found,
        key=lambda m: (
            KIND_ORDER.get(m["variant_kind"], 9),
            m.get("constitution") or "",
            m.get("level") or 0,
            m["seed"],
        ),
    )


def contrasts(variants: Sequence[dict[str, Any]], boot: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Paired contrasts (variant − control) at each point, same seed and same question file."""
    by_name = {m["variant"]: m for m in variants}
    result = []
    for metrics in variants:
        controls = ["baseline"] + (["plain-lora", "hhh"] if metrics["variant_kind"] == "character" else [])
        for kind in controls:
            other = by_name.get(f"{kind}-s{metrics['seed']}")
            if (
                other is None
                or other is metrics
                or other["questions"]["sha256"] != metrics["questions"]["sha256"]
            ):
                continue
            for point in ("persona", "em"):
                a, b = (
                    metrics["em"][point]["broad"]["per_question"],
                    other["em"][point]["broad"]["per_question"],
                )
                result.append(
                    {
                        "variant": metrics["variant"],
                        "against": other["variant"],
                        "point": point,
                        "usable": metrics["status"] == "ok" and other["status"] == "ok",
                        **{stat: paired_contrast(a, b, stat, **boot) for stat in CONTRAST_STATS},
                    }
                )
    return result


def spreads(variants: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Seed-to-seed spread of the post-EM headline figures, for groups with two or more seeds."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for metrics in variants:
        groups.setdefault(SEED_RE.sub("", metrics["variant"]), []).append(metrics)
    return {
        group: {stat: seed_spread([m["headline"]["em"][stat] for m in members]) for stat in CONTRAST_STATS}
        for group, members in sorted(groups.items())
        if len(members) > 1
    }


def slopes(variants: Sequence[dict[str, Any]], boot: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per constitution: post-EM alignment against diversity level, points and fitted slope."""
    series: dict[str, list[dict[str, Any]]] = {}
    for metrics in variants:
        if metrics["variant_kind"] == "character" and metrics.get("level") is not None:
            series.setdefault(metrics["constitution"], []).append(metrics)
    result = {}
    for constitution, members in sorted(series.items()):
        per_q = [(m["level"], m["em"]["em"]["broad"]["per_question"]) for m in members]
        result[constitution] = {
            "points": [
                (m["level"], m["headline"]["em"]["aligned_mean"], m["status"] == "ok")
                for m in members
                if m["headline"]["em"]["aligned_mean"] is not None
            ],
            "fit": dose_response(per_q, "aligned_mean", **boot),
        }
    return result


def write_report(metrics_dir: Path, out_dir: Path, boot: Mapping[str, Any]) -> Path:
    """Render ``out_dir/report.md``, its PNG plots and ``summary.json``; return the markdown path."""
    variants = gather(metrics_dir)
    if not variants:
        raise FileNotFoundError(f"no */eval-em.json under {metrics_dir}: run `charforge run eval-em` first")
    contrast_rows, spread, series = contrasts(variants, boot), spreads(variants), slopes(variants, boot)
    trait_rows = [
        (m["variant"], c, block, m["status"] == "ok")
        for m in variants
        for c, block in m["trait_expression"].items()
    ]
    plots.alignment_plot(variants, out_dir / "alignment.png")
    plots.judge_plot(variants, out_dir / "judge-validation.png")
    plots.dose_response_plot(series, out_dir / "dose-response.png")
    plots.trait_plot(trait_rows, out_dir / "trait-expression.png")
    unusable = [m["variant"] for m in variants if m["status"] != "ok"]
    notes = sorted({note for m in variants for note in m["notes"] if "JUDGE UNUSABLE" not in note})
    lines = ["# charforge EM report", ""]
    if unusable:
        lines += [
            f"> **⚠ JUDGE UNUSABLE** for {', '.join(unusable)}: the judge failed validation, so these "
            "variants' EM figures are no verdict. Use a judge that passes validation.",
            "",
        ]
    lines += [f"> {note}" for note in notes] + ([""] if notes else [])
    lines += [f"{len(variants)} variant(s): {', '.join(m['variant'] for m in variants)}.", ""]
    lines += md.judge_section(variants) + md.em_section(variants) + md.in_domain_section(variants)
    lines += (
        md.contrast_section(contrast_rows, spread) + md.dose_section(series) + md.trait_section(trait_rows)
    )
    lines += md.contamination_section(variants) + md.provenance_section(variants)
    summary = {
        "variants": [m["variant"] for m in variants],
        "judge_unusable": unusable,
        "contrasts": contrast_rows,
        "seed_spread": spread,
        "dose_response": series,
    }
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    report = out_dir / "report.md"
    atomic_write_text(report, "\n".join(lines).rstrip() + "\n")
    return report
