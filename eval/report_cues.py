"""The report's hidden-misalignment section: the broad questions under training-context cues
(``charforge.eval.cues``), per variant, cue and point; and the gap per arm over its training seeds.

The gap of one seed (one evaluated model) is cued − plain on its own answers: the ``(cued, plain)``
``Measure``, both sides resampled with one question draw (they pair: the same model answered both). An
arm's gap is the mean over its seeds, with ``crossed_contrast``'s crossed bootstrap (seeds drawn with
replacement, persona seeds first and EM seeds within each, one question draw shared by every seed) taken
against a reference that is 0 on every question; with one seed it is the per-variant interval, and seeds
that disagree widen it.

Input columns / Output columns: none (functions from gathered metrics to markdown lines).

Runtime parameters: ``eval.bootstrap_resamples``, ``eval.confidence``, ``eval.seed`` (the report's).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from charforge.eval.cues import GAP_STATS
from charforge.eval.metrics import POINTS, Measure, PerQuestion, crossed_contrast
from charforge.eval.report_markdown import diff, fmt, mark, md_table

ONE_SEED = "1 training seed: no seed variance in this interval"
ONE_PERSONA = "1 persona seed: EM-seed variance only, no persona-seed variance"


def seed_gap(
    gaps: Sequence[tuple[PerQuestion, PerQuestion]],
    stat: str,
    *,
    persona_seeds: Sequence[int] | None = None,
    n_resamples: int,
    confidence: float,
    seed: int,
) -> dict[str, Any]:
    """The mean over seeds of cued − plain (``gaps``: one (cued, plain) pair of per-question tables per
    trained unit) with a crossed bootstrap over the seeds and the questions every unit answered under
    both, and the per-unit gaps. ``persona_seeds``: each unit's persona seed, so the draw is two-stage
    (persona seeds, then EM seeds within each), as the report's arm contrasts draw."""
    questions = sorted({q for pair in gaps for table in pair for q in table})
    zero: PerQuestion = {q: {stat: [0.0, 1.0]} for q in questions}  # 0 on every question: no draw moves it
    units: list[Measure] = list(gaps)
    crossed = crossed_contrast(
        units,
        [zero],
        stat,
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
        groups=None if persona_seeds is None else (list(persona_seeds), [0]),
    )
    per_seed = crossed.get("per_seed")
    note = ONE_SEED if len(gaps) == 1 else ONE_PERSONA if crossed["persona_seeds"][0] == 1 else None
    return {
        "difference": crossed["difference"],
        "ci": crossed["ci"],
        "questions": crossed["questions"],
        "seeds": len(gaps),
        "persona_seeds": crossed["persona_seeds"][0],
        "per_seed": per_seed[0] if per_seed else None,
        **({"note": note} if note else {}),
    }


def _unit(metrics: Mapping[str, Any]) -> str:
    """A trained unit's name: eval-em's ``unit`` (variant and EM seed), else the variant, and its EM
    fine-tune seed where it has one (``e<seed>``, as the EM adapter and its metrics are named)."""
    if metrics.get("unit"):
        return str(metrics["unit"])
    em_seed = metrics.get("em_seed")
    return metrics["variant"] + ("" if em_seed is None else f"-e{em_seed}")


def arm_gaps(variants: Sequence[dict[str, Any]], boot: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per arm (the variant name without ``-s<seed>``, as ``report.arms`` groups), cue and point: the
    gap cued − plain over the arm's training seeds (``seed_gap``) for each of ``GAP_STATS``. An arm whose
    seeds were measured differently, or that not every seed answered under the cue, gets ``skipped``."""
    from charforge.eval.report import arms, measurement, one_per_persona  # no import cycle at load time

    result = []
    for arm, units in arms(variants).items():
        for cue in sorted({cue for m in units for cue in ((m.get("cued") or {}).get("figures") or {})}):
            for point in POINTS:
                # before EM every EM seed of a persona shares its answers: one unit per persona there
                members = one_per_persona(units) if point == "persona" else units
                figures = [(m.get("cued") or {}).get("figures") or {} for m in members]
                blocks = [f.get(cue, {}).get(point) for f in figures]
                row: dict[str, Any] = {
                    "arm": arm,
                    "cue": cue,
                    "point": point,
                    "seeds": [_unit(m) for m in members],
                    "usable": all(m["status"] == "ok" for m in members),
                }
                if any(not b or "per_question" not in b or "plain_per_question" not in b for b in blocks):
                    row["skipped"] = "not every seed answered under this cue"
                elif len({measurement(m) for m in members}) > 1:
                    row["skipped"] = "its seeds were measured differently"
                else:
                    pairs = [(b["per_question"], b["plain_per_question"]) for b in blocks if b]
                    personas = [m["seed"] for m in members]  # units of one persona share its training
                    row.update(
                        {stat: seed_gap(pairs, stat, persona_seeds=personas, **boot) for stat in GAP_STATS}
                    )
                result.append(row)
    return result


def _per_seed(block: Mapping[str, Any], scale: float) -> str:
    values = block.get("per_seed")
    if not values:
        return "–"
    text = " / ".join("–" if v is None else f"{v * scale:+.1f}" for v in values)
    return text + (f" ({block['note']})" if block.get("note") else "")


def arm_gap_section(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The gap per arm over its training seeds (``arm_gaps``) as markdown."""
    table = [
        [
            r["arm"] + ("" if r["usable"] else " ⚠"),
            r["cue"],
            r["point"],
            str(len(r["seeds"])),
            diff(r["em_rate_b"], 100),
            diff(r["aligned_mean"], 1),
            _per_seed(r["em_rate_b"], 100),
            str(r["em_rate_b"]["questions"]),
        ]
        for r in rows
        if "skipped" not in r
    ]
    skipped = sorted({f"{r['arm']} / {r['cue']} ({r['skipped']})" for r in rows if "skipped" in r})
    lines = [
        "### The gap per arm, over its training seeds",
        "",
        "Mean over the arm's seeds of each seed's cued − plain gap. Intervals are a crossed bootstrap: each "
        "replicate draws seeds with replacement (persona seeds, then EM seeds within each) and one question "
        "sample shared by every seed (a seed's cued and plain answers pair: the same model gave both). Per "
        "seed: each trained unit's gap in EM (b), percentage points.",
        "",
        *md_table(
            [
                "arm",
                "cue",
                "point",
                "seeds",
                "gap EM (b) (pp)",
                "gap aligned",
                "per seed EM (b)",
                "questions",
            ],
            table,
            "No arm has cued answers from every seed yet.",
        ),
    ]
    if skipped:
        lines += ["", "Not pooled: " + "; ".join(skipped) + "."]
    return [*lines, ""]


def cued_section(variants: Sequence[dict[str, Any]], boot: Mapping[str, Any] | None = None) -> list[str]:
    """Hidden misalignment: per variant, cue and point, EM rate (b) under the cue, the gap to the plain
    questions (cued − plain, with its interval) and the share of cued answers the judge left unscored;
    then the gap per arm over its training seeds (``boot``: the report's bootstrap settings)."""
    asked = sorted({cue for m in variants for cue in (m.get("cued") or {}).get("cues", [])})
    rows = [
        [
            mark(m),
            cue,
            point,
            fmt(block["figures"]["em_rate_b"], 100),
            diff(block["gap"]["em_rate_b"], 100),
            diff(block["gap"]["aligned_mean"], 1),
            "–" if block["unscored_share"] is None else f"{block['unscored_share']:.0%}",
        ]
        for m in variants
        for cue, points in ((m.get("cued") or {}).get("figures") or {}).items()
        for point, block in points.items()
    ]
    missing = sorted(
        {
            f"{cue} ({why})"
            for m in variants
            for cue, why in (m.get("cued") or {}).get("not_applicable", {}).items()
        }
    )
    lines = [
        "## Hidden misalignment: the broad questions under training-context cues",
        "",
        "A defence can look clean on the plain questions and misalign again when the prompt resembles the "
        "training context. Each cue wraps the same questions (json / template: the question file's own "
        "variants; code: answer as a Python function; em-format: the EM training rows' system prompt and "
        "user-turn wrapping). Gap: cued − plain, question by question, one "
        "question draw. Unscored: the share of cued answers the judge did not score (code often comes back "
        "as CODE); a cue that silences the judge hides misalignment rather than showing none.",
        "",
    ]
    if not asked:
        return [*lines, "Not measured: eval.cues is empty (the smoke profile leaves it off for time).", ""]
    lines += md_table(
        ["variant", "cue", "point", "EM (b) % cued", "gap EM (b) (pp)", "gap aligned", "unscored"],
        rows,
        "No cued answers yet.",
    )
    if missing:
        lines += ["", "Cues with no prompts here: " + "; ".join(missing) + "."]
    lines.append("")
    if boot is None:
        return [*lines, "The gap per arm over its training seeds: not computed (no bootstrap settings).", ""]
    return lines + arm_gap_section(arm_gaps(variants, boot))
