"""The report: every variant's EM metrics in one markdown file with PNG plots (docs/design.md §2, §5).

Gathers ``metrics/<variant>/eval-em-e<seed>.json`` (one unit: a variant after one EM fine-tune seed) and
adds what needs more than one unit: contrasts of each
arm against the baseline arm (and, for character arms, against the other controls) before EM, after EM
and of the change under EM, with a bootstrap over training seeds (persona seeds, then EM seeds within
each) crossed with one shared question draw;
seed-to-seed spread of variants that differ only in seed;
and per constitution the slope of post-EM alignment against diversity level with its interval (H1 is
a dose-response question), beside what each level's corpora held (prompts, pairs, tokens, rejections:
reported, not enforced). A variant whose judge failed validation is marked in every table and
plot, and the report opens with that warning: such figures are no verdict.

Input columns: the ``eval-em.json`` metrics of each variant; ``prompts.json``, ``distill.json`` and
``introspect.json`` of each character variant (a missing one shows as n/a).

Output columns: ``reports/report.md``, ``reports/summary.json`` and PNG plots beside them.

Runtime parameters: ``eval.bootstrap_resamples``, ``eval.confidence``, ``eval.seed``;
``controls.token_tolerance`` (how far arms' training data may differ before the report flags it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from charforge.eval import plots, report_cues
from charforge.eval import report_judging as judging
from charforge.eval import report_markdown as md
from charforge.eval import report_training as training
from charforge.eval.metrics import Measure, crossed_contrast, dose_response, pooled_seed_variance, seed_spread
from charforge.eval.report_training import optional_json
from charforge.io import atomic_write_text
from charforge.schemas.params import ControlsConfig

KIND_ORDER = {"baseline": 0, "plain-lora": 1, "hhh": 2, "character": 3}
CONTRAST_STATS = ("aligned_mean", "share_aligned_le_30", "em_rate_b")
CONTRAST_POINTS = ("persona", "em", "change")
SEED_RE = re.compile(r"-s[0-9]+$")


def gather(metrics_dir: Path) -> list[dict[str, Any]]:
    """Every unit's eval-em metrics (a variant after one EM seed), baseline and controls first, then by
    constitution/level/persona seed/EM seed."""
    found = [
        json.loads(path.read_text(encoding="utf-8")) for path in sorted(metrics_dir.glob("*/eval-em-e*.json"))
    ]
    return sorted(
        found,
        key=lambda m: (
            KIND_ORDER.get(m["variant_kind"], 9),
            m.get("constitution") or "",
            m.get("level") or 0,
            m["seed"],
            m["em_seed"],
        ),
    )


def measurement(metrics: Mapping[str, Any]) -> str:
    """How a variant's EM figures were measured: question files (by hash), the questions selected, samples
    per question, sampling and judge (and the dtype a local judge scored in). Figures measured differently
    are never contrasted."""
    questions = metrics["questions"]
    return json.dumps(
        [
            questions["files"],
            questions["ids"],
            questions["samples_per_question_used"],
            metrics["sampling"],
            metrics["judge"]["name"],
            metrics["judge"].get("dtype"),  # a local judge scores in the dtype its machine resolves
        ],
        sort_keys=True,
    )


def broad_measure(metrics: Mapping[str, Any], point: str) -> Measure:
    """The broad questions' per-question table at ``point`` (``persona``, ``em``), or for ``change`` the
    (after EM, before EM) pair whose difference is the change under EM."""
    tables = {p: metrics["em"][p]["broad"]["per_question"] for p in ("persona", "em")}
    return (tables["em"], tables["persona"]) if point == "change" else tables[point]


def arms(variants: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Units grouped by arm: the variant name without its ``-s<seed>`` (``humor-d3``, ``baseline``), every
    persona seed and EM seed of it."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for metrics in variants:
        grouped.setdefault(SEED_RE.sub("", metrics["variant"]), []).append(metrics)
    return grouped


def pooled_variances(
    grouped: Mapping[str, Sequence[dict[str, Any]]], points: Sequence[str] = CONTRAST_POINTS
) -> dict[tuple[str, str, str], Any]:
    """The training-seed variance per (measurement, point, statistic), pooled over every arm of
    ``grouped`` measured alike (``pooled_seed_variance``)."""
    keys = {measurement(m) for units in grouped.values() for m in units}
    return {
        (key, point, stat): pooled_seed_variance(
            [
                ([broad_measure(m, point) for m in chosen], [m["seed"] for m in chosen])
                for units in grouped.values()
                if measurement(units[0]) == key
                for chosen in [one_per_persona(units) if point == "persona" else units]
            ],
            stat,
        )
        for key in keys
        for point in points
        for stat in CONTRAST_STATS
    }


def contrast_row(
    arm: str,
    units: Sequence[dict[str, Any]],
    control: str,
    other_units: Sequence[dict[str, Any]],
    point: str,
    pooled: Mapping[tuple[str, str, str], Any],
    boot: Mapping[str, Any],
) -> dict[str, Any]:
    """``arm`` − ``control`` at ``point``, with a crossed bootstrap over each side's training seeds."""
    # before EM every EM seed of a persona shares its answers: one unit per persona there
    members, others = (
        (one_per_persona(units), one_per_persona(other_units)) if point == "persona" else (units, other_units)
    )
    a, b = [broad_measure(m, point) for m in members], [broad_measure(m, point) for m in others]
    groups = ([m["seed"] for m in members], [m["seed"] for m in others])  # persona seeds
    return {
        "variant": arm,
        "against": control,
        "point": point,
        "seeds": [[m["unit"] for m in members], [m["unit"] for m in others]],
        "usable": all(m["status"] == "ok" for m in (*members, *others)),
        **{
            stat: crossed_contrast(
                a, b, stat, **boot, groups=groups, pooled=pooled[measurement(units[0]), point, stat]
            )
            for stat in CONTRAST_STATS
        },
    }


def contrasts(variants: Sequence[dict[str, Any]], boot: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Arm − control arm (the baseline; for a character arm also plain-lora and hhh), with a crossed
    bootstrap over each arm's training seeds (persona seeds, EM seeds within each) and one shared question
    draw: before EM, after EM, and of the change under EM. Seeds are not paired across arms (a character
    seed and a baseline seed share no data). Arms whose units were measured differently are never
    contrasted. The training-seed variance is pooled over every arm measured alike (``pooled_seed_variance``:
    equal seed variance assumed), so two personas per arm still give an interval with usable degrees of
    freedom, and an arm with one persona still carries persona-seed variance."""
    grouped = arms(variants)
    pooled = pooled_variances(grouped)
    result = []
    for arm, units in grouped.items():
        controls = ["baseline"] + (["plain-lora", "hhh"] if units[0]["variant_kind"] == "character" else [])
        for control in controls:
            other_units = grouped.get(control)
            if not other_units or other_units is units:
                continue
            if len({measurement(m) for m in (*units, *other_units)}) > 1:
                continue
            for point in CONTRAST_POINTS:
                result.append(contrast_row(arm, units, control, other_units, point, pooled, boot))
    return result


def one_per_persona(units: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first unit of each persona (variant): for what is measured before EM, which its EM seeds share."""
    return list({m["variant"]: m for m in reversed(units)}.values())[::-1]


def persona_pools(units: Sequence[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """(level, {"em": the broad per-question table after EM with its EM seeds' answers pooled (numerators
    and denominators summed), "persona": the table before EM, which they share}) per persona."""
    pooled: dict[str, tuple[int, dict[str, Any]]] = {}
    for m in units:
        after = m["em"]["em"]["broad"]["per_question"]
        if m["variant"] not in pooled:
            before = m["em"]["persona"]["broad"]["per_question"]
            pooled[m["variant"]] = (
                m["level"],
                {"em": {q: dict(t) for q, t in after.items()}, "persona": before},
            )
            continue
        table = pooled[m["variant"]][1]["em"]
        for question, terms in after.items():
            if question not in table:
                table[question] = dict(terms)
                continue
            table[question] = {
                stat: [table[question][stat][0] + num, table[question][stat][1] + den]
                for stat, (num, den) in terms.items()
                if stat in table[question]
            }
    return list(pooled.values())


def spreads(variants: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Unit-to-unit spread (persona and EM seeds) of the post-EM headline figures and of their change
    under EM, for arms with two or more units."""
    return {
        group: {
            f"{point} {stat}": seed_spread([m["headline"][point][stat] for m in members])
            for point in ("em", "change")
            for stat in CONTRAST_STATS
        }
        for group, members in sorted(arms(variants).items())
        if len(members) > 1
    }


def slopes(variants: Sequence[dict[str, Any]], boot: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per constitution: post-EM alignment and its change under EM against diversity level, points and
    fitted slopes (the change is H1's reading: a level that starts higher has less room to fall). The
    points are the units (variant × EM seed); the fit takes one point per persona, its EM seeds pooled,
    so EM seeds are not counted as independent personas."""
    series: dict[str, list[dict[str, Any]]] = {}
    for metrics in variants:
        if metrics["variant_kind"] == "character" and metrics.get("level") is not None:
            series.setdefault(metrics["constitution"], []).append(metrics)
    result = {}
    for constitution, members in sorted(series.items()):
        personas = persona_pools(members)
        per_q = [(level, pooled["em"]) for level, pooled in personas]
        changes = [(level, (pooled["em"], pooled["persona"])) for level, pooled in personas]
        result[constitution] = {
            "change_points": [
                (m["level"], m["headline"]["change"]["aligned_mean"], m["status"] == "ok")
                for m in members
                if m["headline"]["change"]["aligned_mean"] is not None
            ],
            "fit_change": dose_response(changes, "aligned_mean", **boot),
            "points": [
                (m["level"], m["headline"]["em"]["aligned_mean"], m["status"] == "ok")
                for m in members
                if m["headline"]["em"]["aligned_mean"] is not None
            ],
            "fit": dose_response(per_q, "aligned_mean", **boot),
        }
    return result


# The diversity figures the H1 table shows (charforge.eval.diversity, report version 2): two lexical
# redundancy figures (higher = less diverse) and the semantic one
DIVERSITY_FIGURES = ("compression_ratio", "self_bleu", "vendi_score")


def diversity_levels(metrics_dir: Path, variants: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per character variant (those with prompts metrics or EM metrics), what its corpora held: the
    situations its level drew on, the prompts' diversity (the per-trait means of
    ``metrics/<variant>/diversity.json``: did the level change diversity?), prompts and pairs after
    distillation with rejections by reason, and tokens. H1's arms are held equal in prompts per trait
    only; the rest is reported so a reader sees what was matched and what was not. ``None`` where a
    stage's metrics file is missing."""
    evaluated = {m["variant"]: m for m in variants if m["variant_kind"] == "character"}
    names = {path.parent.name for path in metrics_dir.glob("*/prompts.json")} | set(evaluated)
    rows = []
    for name in names:
        prompts = optional_json(metrics_dir / name / "prompts.json") or {}
        distill = optional_json(metrics_dir / name / "distill.json") or {}
        diversity = (optional_json(metrics_dir / name / "diversity.json") or {}).get("per_trait_mean") or {}
        identity = prompts.get("variant") or {
            key: evaluated[name].get(key) for key in ("constitution", "level", "seed")
        }
        level = prompts.get("level") or {}
        per_trait = level.get("per_trait") or {}
        rows.append(
            {
                "variant": name,
                **identity,
                "situations_per_trait": sorted({len(t["situations"]) for t in per_trait.values()}) or None,
                "situations_used": level.get("situations_used"),
                "prompts": prompts.get("rows"),
                "prompts_rejected": prompts.get("rejected"),
                **{figure: diversity.get(figure) for figure in DIVERSITY_FIGURES},
                "prompt_tokens": ((prompts.get("size") or {}).get("tokens") or {}).get("total"),
                "pairs": distill.get("rows"),
                "distill_rejected": distill.get("rejected"),
                "pair_tokens": (distill.get("tokens") or {}).get("total"),
            }
        )
    return sorted(
        rows, key=lambda r: (r["constitution"] or "", r["level"] or 0, r["seed"] or 0, r["variant"])
    )


# A control's adapter slots and the character arm's training stage in each (docs/design.md §1, H2)
CONTROL_SLOT_STAGES = {"dpo": ("train-dpo-slot", "train-dpo"), "sft": ("train-sft", "train-sft")}


def _ratio(control: float | None, character: float | None) -> float | None:
    return None if control is None or not character else round(control / character, 4)


def control_arms(metrics_dir: Path, arms: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every control × every character variant it is compared with (``arms``: ``controls``,
    ``references`` in the grid, ``tolerance``): training tokens (after truncation, as trained: each
    run's ``tokens_trained``) and optimizer steps per adapter slot and summed, each as control /
    character, from the training metrics. ``flagged``: a token ratio outside 1 ± tolerance; ratios are
    None (and nothing flagged) where a training metrics file is missing."""
    tolerance = arms["tolerance"]
    rows = []
    for control in arms["controls"]:
        for character in arms["references"]:
            row: dict[str, Any] = {"control": control, "character": character, "tolerance": tolerance}
            for slot, (control_stage, character_stage) in CONTROL_SLOT_STAGES.items():
                for arm, name, stage in (
                    ("control", control, control_stage),
                    ("character", character, character_stage),
                ):
                    record = optional_json(metrics_dir / name / f"{stage}.json") or {}
                    row[f"{slot}_{arm}_tokens"] = record.get("tokens_trained")
                    row[f"{slot}_{arm}_steps"] = record.get("optimizer_steps")
            for figure in ("tokens", "steps"):
                for arm in ("control", "character"):  # both slots summed; None where either is missing
                    parts = [row[f"{slot}_{arm}_{figure}"] for slot in CONTROL_SLOT_STAGES]
                    row[f"{arm}_{figure}"] = None if None in parts else sum(parts)
                for prefix in ("", *(f"{slot}_" for slot in CONTROL_SLOT_STAGES)):
                    row[f"{prefix}{figure}_ratio"] = _ratio(
                        row[f"{prefix}control_{figure}"], row[f"{prefix}character_{figure}"]
                    )
            ratios = [row[key] for key in ("tokens_ratio", "dpo_tokens_ratio", "sft_tokens_ratio")]
            row["flagged"] = any(r is not None and abs(r - 1) > tolerance + 1e-9 for r in ratios)
            rows.append(row)
    return rows


def introspection_rows(metrics_dir: Path, personas: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each persona's self-interaction kept (``report_training.introspection_rows``), grouped by arm."""
    return training.introspection_rows(metrics_dir, arms(personas))


def em_data_rows(metrics_dir: Path, personas: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each persona's EM training set (``report_training.em_data_rows``), grouped by arm."""
    return training.em_data_rows(metrics_dir, arms(personas))


def write_report(
    metrics_dir: Path,
    out_dir: Path,
    boot: Mapping[str, Any],
    arms: Mapping[str, Any] | None = None,
    expected: Sequence[str] | None = None,
    expected_defended: Sequence[str] | None = None,
) -> Path:
    """Render ``out_dir/report.md``, its PNG plots and ``summary.json``; return the markdown path.
    ``arms``: the controls and the character variants they are compared with (``control_arms``), and the
    tolerance that training tokens, and the character arms' shares of self-interaction kept, are held to;
    ``expected``: the units of this experiment (others found are left out, missing ones listed);
    ``expected_defended``: its defended units (``<variant>-<defence>-e<seed>``), likewise."""
    from charforge.eval import report_defences

    found = gather(metrics_dir)
    variants = found if expected is None else [m for m in found if m["unit"] in set(expected)]
    left_out = sorted(m["unit"] for m in found if m not in variants)
    missing = [unit for unit in expected or [] if unit not in {m["unit"] for m in found}]
    every_defended = report_defences.gather_defended(metrics_dir)
    wanted = None if expected is None else set(expected_defended or [])
    defended = [m for m in every_defended if wanted is None or m["unit"] in wanted]
    left_out += sorted(m["unit"] for m in every_defended if m not in defended)
    missing += [unit for unit in expected_defended or [] if unit not in {m["unit"] for m in defended}]
    if not variants:
        raise FileNotFoundError(
            f"no */eval-em-e*.json under {metrics_dir}: run `charforge run eval-em` first"
        )
    contrast_rows, spread, series = contrasts(variants, boot), spreads(variants), slopes(variants, boot)
    personas = one_per_persona(variants)
    introspection = introspection_rows(metrics_dir, personas)
    em_data = em_data_rows(metrics_dir, personas)
    # the tolerance arms' training data are held to; the key's default where params name no controls
    tolerance = arms["tolerance"] if arms else ControlsConfig.model_fields["token_tolerance"].default
    trait_rows = [  # measured before EM: one row per persona, whatever its EM seeds
        (m["variant"], c, block, m["status"] == "ok")
        for m in personas
        for c, block in m["trait_expression"].items()
    ]
    plots.alignment_plot(variants, out_dir / "alignment.png")
    plots.judge_plot(variants, out_dir / "judge-validation.png")
    plots.dose_response_plot(series, out_dir / "dose-response.png")
    plots.trait_plot(trait_rows, out_dir / "trait-expression.png")
    unusable = [m["unit"] for m in variants if m["status"] != "ok"]
    notes = sorted({note for m in variants for note in m["notes"] if "JUDGE UNUSABLE" not in note})
    lines = ["# charforge EM report", ""]
    if unusable:
        lines += [
            f"> **⚠ JUDGE UNUSABLE** for {', '.join(unusable)}: the judge failed validation, so these "
            "variants' EM figures are no verdict. Use a judge that passes validation.",
            "",
        ]
    lines += [f"> {note}" for note in notes] + ([""] if notes else [])
    if missing:
        lines += [
            f"> **⚠ MISSING UNITS**: {', '.join(missing)} of this grid have no EM metrics yet: their arms "
            "hold fewer seeds than the grid asks. Run `dvc repro` (or `charforge run eval-em`).",
            "",
        ]
    if left_out:
        lines += [
            f"> Left out: {', '.join(left_out)}: metrics files not of this grid and EM seed list (left from "
            "an earlier run), so not pooled with it.",
            "",
        ]
    measured: dict[str, list[str]] = {}
    for m in variants:
        measured.setdefault(measurement(m), []).append(m["unit"])
    if len(measured) > 1:
        groups = "; ".join(", ".join(names) for names in measured.values())
        lines += [
            f"> **⚠ MEASURED DIFFERENTLY**: {len(measured)} groups of variants used other question files, "
            f"questions, samples, sampling, judges or judge dtypes ({groups}). Contrasts pair only variants "
            "measured alike; seed spreads and slopes across groups mix measurements. Re-run eval-em with one "
            "setting.",
            "",
        ]
    for line in md.no_in_domain_questions(variants):
        lines += [f"> **⚠ NO IN-DOMAIN CHECK**: {line}", ""]
    lines += training.introspection_warning(introspection, tolerance) + training.em_data_warning(em_data)
    lines += [
        f"{len(personas)} variant(s), {len(variants)} unit(s) (variant after one EM fine-tune seed): "
        f"{', '.join(m['unit'] for m in variants)}.",
        "",
    ]
    lines += judging.judge_section(variants) + judging.comparability_section(variants)
    learning = {
        m["unit"]: (
            (optional_json(metrics_dir / m["variant"] / f"em-finetune-e{m['em_seed']}.json") or {}).get(
                "extra"
            )
            or {}
        ).get("held_out_loss")
        for m in variants
    }
    lines += (
        md.em_section(variants)
        + md.in_domain_section(variants, learning)
        + report_cues.cued_section(variants, boot)
        + judging.extra_metrics_section(variants)
        + judging.judges_section(variants)
    )
    levels = diversity_levels(metrics_dir, variants)
    lines += (
        md.contrast_section(contrast_rows, spread)
        + md.dose_section(series)
        + md.diversity_section(levels)
        + md.trait_section(trait_rows, {m["variant"]: m.get("held_out") for m in personas})
    )
    defence_rows = report_defences.defence_contrasts(variants, defended, boot)
    prompted = report_defences.with_prompt_rows(defended)
    defended_units = report_defences.unit_rows(defended, metrics_dir)
    lines += report_defences.defences_section(defence_rows, prompted, defended_units)
    arm_rows = control_arms(metrics_dir, arms) if arms else []
    lines += md.control_arms_section(arm_rows) + training.introspection_section(introspection)
    lines += training.em_data_section(em_data)
    lines += md.contamination_section(variants) + md.provenance_section(variants)
    summary = {
        "variants": [m["variant"] for m in personas],
        "units": [m["unit"] for m in variants],
        "missing_units": missing,
        "left_out_units": left_out,
        "judge_unusable": unusable,
        "contrasts": contrast_rows,
        "defended_units": [m["unit"] for m in defended],
        "defence_contrasts": defence_rows,
        "defended": defended_units,
        "inoculation_with_prompt": prompted,
        "seed_spread": spread,
        "cue_gaps": report_cues.arm_gaps(variants, boot),
        "dose_response": series,
        "diversity_levels": levels,
        "controls_vs_character_arms": arm_rows,
        "introspection": introspection,
        "introspection_arm_shares": training.arm_shares(introspection),
        "em_data": em_data,
    }
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    report = out_dir / "report.md"
    atomic_write_text(report, "\n".join(lines).rstrip() + "\n")
    return report
