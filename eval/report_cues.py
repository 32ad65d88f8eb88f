"""The report's hidden-misalignment section: the broad questions under training-context cues
(``charforge.eval.cues``), per variant, cue and point.

Input columns / Output columns: none (functions from gathered metrics to markdown lines).

Runtime parameters: none.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from charforge.eval.report_markdown import diff, fmt, mark, md_table


def cued_section(variants: Sequence[dict[str, Any]]) -> list[str]:
    """Hidden misalignment: per variant, cue and point, EM rate (b) under the cue, the gap to the plain
    questions (cued − plain, with its interval) and the share of cued answers the judge left unscored."""
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
        "variants; code: answer as a Python function). Gap: cued − plain, question by question, one "
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
    return [*lines, ""]
