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

from charforge.eval.report import SEED_RE, arms, contrast_row, measurement, pooled_variances
from charforge.eval.report_markdown import diff, md_table

POINT = "change"  # a defence acts on the EM fine-tune: its contrast is of the change under EM


def gather_defended(metrics_dir: Path, expected: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Every defended unit's eval-em metrics (of ``expected`` units only, when given)."""
    found = [
        json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(metrics_dir.glob("*/eval-em-*-e*.json"))
        if not path.name.startswith("eval-em-e")
    ]
    defended = [m for m in found if m.get("defence")]
    return defended if expected is None else [m for m in defended if m["unit"] in set(expected)]


def defended_arm(metrics: Mapping[str, Any]) -> str:
    """``baseline+inoculation``: the arm (variant without its seed) and the defence."""
    return f"{SEED_RE.sub('', metrics['variant'])}+{metrics['defence']['name']}"


def defence_contrasts(
    undefended: Sequence[dict[str, Any]], defended: Sequence[dict[str, Any]], boot: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Each defended arm's change under EM − that of the same arm undefended (what the defence buys), and
    − that of every character arm undefended (does a constitution beat the defence?). Sides measured
    differently are never contrasted; the seed variance is pooled over every arm, defended or not,
    measured alike. Seeds are not paired even where they could be (a defended unit shares its persona and
    EM seed with its undefended one): the interval is conservative there."""
    plain = arms(undefended)
    guarded: dict[str, list[dict[str, Any]]] = {}
    for m in defended:
        guarded.setdefault(defended_arm(m), []).append(m)
    pooled = pooled_variances({**plain, **guarded}, (POINT,))
    characters = [arm for arm, units in plain.items() if units[0]["variant_kind"] == "character"]
    rows = []
    for arm, units in guarded.items():
        own = SEED_RE.sub("", units[0]["variant"])
        for against in dict.fromkeys([own, *characters]):  # own first; a character arm once
            others = plain.get(against)
            if not others or len({measurement(m) for m in (*units, *others)}) > 1:
                continue
            row = contrast_row(arm, units, against, others, POINT, pooled, boot)
            rows.append({**row, "defence": units[0]["defence"]["name"], "same_arm": against == own})
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
            }
        )
    return rows


def defences_section(
    contrasts: Sequence[dict[str, Any]], prompted: Sequence[dict[str, Any]], units: Sequence[str]
) -> list[str]:
    if not units:
        return []
    lines = [
        "## EM defences",
        "",
        f"Defended units: {', '.join(units)}. Each is the undefended unit of the same persona and EM seed "
        "(same EM examples, training seed and settings) with only the defence added (`defences` in "
        "params). Rows: the defended arm's change under EM minus that of the arm in `against`: the same arm "
        "undefended (what the defence buys; negative Δ EM = fewer misaligned answers) or a character arm "
        "undefended (does a constitution beat the defence? positive Δ EM = the defence lets more through). "
        "interleave trains on more rows (its benign ones: more steps); kl adds a term, not rows.",
        "",
    ]
    table = [
        [
            r["variant"] + ("" if r["usable"] else " ⚠"),
            r["against"] + (" (undefended)" if r["same_arm"] else ""),
            diff(r["aligned_mean"], 1),
            diff(r["share_aligned_le_30"], 100),
            diff(r["em_rate_b"], 100),
            " / ".join(str(len(side)) for side in r["seeds"]),
        ]
        for r in contrasts
    ]
    lines += md_table(
        ["defended arm", "against", "Δ change aligned", "Δ change ≤30 (pp)", "Δ change EM (b) (pp)", "units"],
        table,
        "No defended arm has an arm evaluated the same way to be contrasted with yet.",
    )
    if prompted:
        lines += [
            "",
            "Inoculation, read twice: mean alignment's change under EM on the broad questions without the "
            "inoculation prompt (the published test) and with it on persona and EM model alike (a large "
            "drop only with it: the behaviour is tied to the prompt, as intended).",
            "",
        ]
        lines += md_table(
            ["unit", "change without prompt", "change with prompt"],
            [
                [r["unit"] + ("" if r["usable"] else " ⚠"), diff(r["without"], 1), diff(r["with"], 1)]
                for r in prompted
            ],
        )
    return [*lines, ""]
