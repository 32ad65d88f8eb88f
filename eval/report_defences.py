"""The EM defences in the report (issue 24): does a constitution beat the cheap published defences?

Input columns: ``metrics/<variant>/eval-em-<defence>-e<seed>.json`` (a defended unit: the variant after
one EM seed's fine-tune under one defence) and the undefended units. Output: the contrasts of every
defended arm's change under EM against the same arm undefended and against every character arm, with the
intervals of ``charforge.eval.report.contrast_row``; the inoculation defence's second reading (with its
prompt); and the markdown section.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from charforge.eval.metrics import paired_units_contrast, pooled_seed_variance
from charforge.eval.report import (
    CONTRAST_STATS,
    SEED_RE,
    arms,
    contrast_row,
    measurement,
    pooled_variances,
)
from charforge.eval.report_markdown import diff, fmt, md_table
from charforge.eval.report_training import optional_json
from charforge.paths import em_seed_suffix

POINT = "change"  # a defence acts on the EM fine-tune: its contrast is of the change under EM


def gather_defended(metrics_dir: Path) -> list[dict[str, Any]]:
    """Every defended unit's eval-em metrics (``eval-em-<defence>-e<seed>.json``)."""
    found = [
        json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(metrics_dir.glob("*/eval-em-*-e*.json"))
        if not path.name.startswith("eval-em-e")
    ]
    return [m for m in found if m.get("defence")]


def defended_arm(metrics: Mapping[str, Any]) -> str:
    """``baseline+inoculation``: the arm (variant without its seed) and the defence."""
    return f"{SEED_RE.sub('', metrics['variant'])}+{metrics['defence']['name']}"


def defence_contrasts(
    undefended: Sequence[dict[str, Any]], defended: Sequence[dict[str, Any]], boot: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Each defended arm's change under EM − that of the same arm undefended (what the defence buys), and
    − that of every character arm undefended (does a constitution beat the defence?). Sides measured
    differently are never contrasted.

    Against its own arm a defended unit is paired with the undefended unit of the same persona and EM seed
    (the same before-EM answers, so the difference of the changes is em − em; ``paired_units_contrast``),
    the seed variance of the per-persona differences pooled over every defended arm measured alike.
    Against a character arm the units share no data: a crossed contrast, the seed variance pooled over
    the undefended arms, as in the report's other contrasts (a defended arm's personas are its undefended
    arm's, so pooling it too would count them twice)."""
    plain = arms(undefended)
    guarded: dict[str, list[dict[str, Any]]] = {}
    for m in defended:
        guarded.setdefault(defended_arm(m), []).append(m)
    pooled = pooled_variances(plain, (POINT,))
    paired = {
        arm: pairs
        for arm, units in guarded.items()
        if (pairs := partnered(units, plain.get(SEED_RE.sub("", units[0]["variant"])) or []))
        and len({measurement(m) for pair in pairs for m in pair}) == 1
    }
    paired_pool = {
        (key, stat): pooled_seed_variance(
            [
                ([pair_tables(a, b) for a, b in pairs], [a["seed"] for a, _ in pairs])
                for pairs in paired.values()
                if measurement(pairs[0][0]) == key
            ],
            stat,
        )
        for key in {measurement(pairs[0][0]) for pairs in paired.values()}
        for stat in CONTRAST_STATS
    }
    characters = [arm for arm, units in plain.items() if units[0]["variant_kind"] == "character"]
    rows = []
    for arm, units in guarded.items():
        own = SEED_RE.sub("", units[0]["variant"])
        name = units[0]["defence"]["name"]
        if arm in paired:
            pairs = paired[arm]
            row = {
                "variant": arm,
                "against": own,
                "point": POINT,
                "seeds": [[a["unit"] for a, _ in pairs], [b["unit"] for _, b in pairs]],
                "usable": all(m["status"] == "ok" for pair in pairs for m in pair),
                **{
                    stat: paired_units_contrast(
                        [pair_tables(a, b) for a, b in pairs],
                        stat,
                        **boot,
                        groups=[a["seed"] for a, _ in pairs],
                        pooled=paired_pool[measurement(pairs[0][0]), stat],
                    )
                    for stat in CONTRAST_STATS
                },
            }
            rows.append({**row, "defence": name, "same_arm": True})
        for against in characters:
            others = plain[against]
            if len({measurement(m) for m in (*units, *others)}) > 1:
                continue
            row = contrast_row(arm, units, against, others, POINT, pooled, boot)
            rows.append({**row, "defence": name, "same_arm": False})
    return rows


def partnered(
    units: Sequence[dict[str, Any]], undefended: Sequence[dict[str, Any]]
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Each defended unit with the undefended unit of the same persona and EM seed (those that have one)."""
    partner = {(m["variant"], m["em_seed"]): m for m in undefended}
    return [
        (m, partner[m["variant"], m["em_seed"]]) for m in units if (m["variant"], m["em_seed"]) in partner
    ]


def pair_tables(defended: Mapping[str, Any], undefended: Mapping[str, Any]) -> tuple[Any, Any]:
    """The broad questions' tables after EM of a defended unit and its undefended partner: their difference
    is the difference of their changes under EM (the before-EM answers are the same)."""
    return (defended["em"]["em"]["broad"]["per_question"], undefended["em"]["em"]["broad"]["per_question"])


def unit_rows(defended: Sequence[dict[str, Any]], metrics_dir: Path) -> list[dict[str, Any]]:
    """Per defended unit, what tells a defence from an EM fine-tune that did not take: the in-domain
    check, the judge-free held-out loss change (and, for inoculation, under its prompt), the coherent
    share after EM, and the defence's settings."""
    rows = []
    for m in defended:
        unit = em_seed_suffix(m["em_seed"], m["defence"]["name"])
        trained = optional_json(metrics_dir / m["variant"] / f"em-finetune-{unit}.json")
        extra = (trained or {}).get("extra") or {}
        settings = {key: value for key, value in (extra.get("defence") or {}).items() if key != "name"}
        rows.append(
            {
                "unit": m["unit"],
                "defence": m["defence"]["name"],
                "usable": m["status"] == "ok",
                "em_took": (m.get("in_domain_check") or {}).get("took"),
                "held_out_loss_change": (extra.get("held_out_loss") or {}).get("change"),
                "held_out_loss_change_as_trained": (extra.get("held_out_loss_as_trained") or {}).get(
                    "change"
                ),
                "coherent_after_em": m["headline"]["em"].get("coherent_mean"),
                "kl_last": (extra.get("kl") or {}).get("last"),
                "settings": settings,
            }
        )
    return rows


def with_prompt_rows(defended: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per inoculated unit: mean alignment's change under EM without the prompt (the published test) and
    with it (the behaviour tied to the prompt?)."""
    rows = []
    for m in defended:
        block = m.get("with_inoculation_prompt")
        if not block:
            continue
        rows.append(
            {
                "unit": m["unit"],
                "usable": m["status"] == "ok",
                "without": m["change_under_em"]["broad"]["aligned_mean"],
                "with": block["change"]["aligned_mean"],
                "with_minus_without": (block.get("change_minus_without") or {}).get("aligned_mean") or {},
                "persona_with_prompt": block["points"]["persona"]["figures"]["aligned_mean"],
            }
        )
    return rows


def _yes_no(value: bool | None) -> str:
    return "–" if value is None else ("yes" if value else "**no**")


def _number(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:+.{digits}f}"


def _settings(settings: Mapping[str, Any]) -> str:
    shown = {key: value for key, value in settings.items() if key not in ("rows_inoculated", "em_rows")}
    return ", ".join(
        f"{key} {value:.3g}" if isinstance(value, float) else f"{key} {value}" for key, value in shown.items()
    )


def defences_section(
    contrasts: Sequence[dict[str, Any]],
    prompted: Sequence[dict[str, Any]],
    units: Sequence[dict[str, Any]],
) -> list[str]:
    if not units:
        return []
    lines = [
        "## EM defences",
        "",
        "Each defended unit is the undefended unit of the same persona and EM seed (same EM examples, "
        "training seed and settings, the same before-EM answers) with only the defence added (`defences` "
        "in params). First, per unit, whether the EM fine-tune took at all: a defence that stops the "
        "narrow task from being learned is no defence (EM took: the in-domain check; held-out loss Δ: the "
        "judge-free in-domain learning, negative = learned; for inoculation also under its prompt, as it "
        "was trained; coherent: mean coherence after EM). For inoculation the in-domain check is asked "
        "without the prompt: a narrow behaviour tied to the prompt can read as not taken there, so read "
        "the held-out loss under its prompt beside it.",
        "",
    ]
    lines += md_table(
        [
            "unit",
            "settings",
            "EM took",
            "held-out loss Δ",
            "… under its prompt",
            "coherent after EM",
            "KL (last step)",
        ],
        [
            [
                r["unit"] + ("" if r["usable"] else " ⚠"),
                _settings(r["settings"]),
                _yes_no(r["em_took"]),
                _number(r["held_out_loss_change"]),
                _number(r["held_out_loss_change_as_trained"]),
                "–" if r["coherent_after_em"] is None else f"{r['coherent_after_em']:.1f}",
                "–" if r["kl_last"] is None else f"{r['kl_last']:.4f}",
            ]
            for r in units
        ],
    )
    lines += [
        "",
        "Contrasts of the change under EM: the defended arm minus the arm in `against`, either the same "
        "arm undefended (what the defence buys: paired unit by unit, same persona and EM seed; positive "
        "Δ aligned and negative Δ EM = the defence helped) or a character arm undefended (does a "
        "constitution beat the defence? crossed, seeds unpaired; negative Δ aligned = the constitution "
        "kept more). interleave "
        "trains on more rows (its benign ones: more steps); kl adds a term, not rows.",
        "",
    ]
    table = [
        [
            r["variant"] + ("" if r["usable"] else " ⚠"),
            r["against"] + (" (undefended, paired)" if r["same_arm"] else ""),
            diff(r["aligned_mean"], 1),
            diff(r["share_aligned_le_30"], 100),
            diff(r["em_rate_b"], 100),
            " / ".join(str(len(side)) for side in r["seeds"]),
            "; ".join(filter(None, [r["aligned_mean"].get("ci_method"), r["aligned_mean"].get("note")]))
            or "–",
        ]
        for r in contrasts
    ]
    lines += md_table(
        [
            "defended arm",
            "against",
            "Δ change aligned",
            "Δ change ≤30 (pp)",
            "Δ change EM (b) (pp)",
            "units",
            "interval",
        ],
        table,
        "No defended arm has an arm evaluated the same way to be contrasted with yet.",
    )
    if prompted:
        lines += [
            "",
            "Inoculation, read twice: mean alignment's change under EM on the broad questions without the "
            "inoculation prompt (the published test) and with it, persona and EM model alike, and the "
            "difference (paired by question). A drop much larger with the prompt = the behaviour is tied "
            "to the prompt, as intended; but a persona already low under the prompt has little room to "
            "fall, so read it beside the persona's level with the prompt.",
            "",
        ]
        lines += md_table(
            ["unit", "change without prompt", "change with prompt", "with − without", "persona with prompt"],
            [
                [
                    r["unit"] + ("" if r["usable"] else " ⚠"),
                    diff(r["without"], 1),
                    diff(r["with"], 1),
                    diff(r["with_minus_without"], 1),
                    fmt(r["persona_with_prompt"]),
                ]
                for r in prompted
            ],
        )
    return [*lines, ""]
