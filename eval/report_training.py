"""The report's introspection section: how much of the self-interaction it asked for each persona kept
(docs/design.md §1–2), and a warning when the character arms kept unequal shares.

A self-interaction conversation that reaches the student's context (or whose next turn fails) keeps its
complete turns, counted as truncated, or is dropped below ``introspection.min_exchanges``
(``charforge.generators.introspect``). Arms held equal in everything the pipeline controls may then still
train on different amounts of self-interaction: a difference the report shows, per persona, from
``metrics/<variant>/introspect.json``. Controls and the baseline write no introspection ("none", not 0).

Input columns / Output columns: none (functions from metrics files to rows and markdown lines).

Runtime parameters: ``controls.token_tolerance`` (the report's: the most two character arms' shares of
truncated conversations, or of turns kept of those asked, may differ before the report warns).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from charforge.eval.report_markdown import md_table

# The introspect stage's counts the section reads (``InteractionCounts.as_metrics``, flat in the metrics file)
COUNTS = (
    "conversations_asked",
    "complete_conversations",
    "truncated_conversations",
    "dropped_conversations",
    "turns_kept",
    "turns_asked_total",
)
# The two shares the warning compares across character arms: (label, numerator, denominator)
SHARES = {
    "truncated_share": ("conversations kept truncated", "truncated_conversations", "conversations_asked"),
    "turns_share": ("turns kept of those asked", "turns_kept", "turns_asked_total"),
}


def _share(numerator: int | None, denominator: int | None) -> float | None:
    return None if numerator is None or not denominator else numerator / denominator


def introspection_rows(
    metrics_dir: Path, arms: Mapping[str, Sequence[Mapping[str, Any]]]
) -> list[dict[str, Any]]:
    """One row per persona of ``arms`` (arm → its personas' eval metrics, in report order): the counts of
    its ``introspect.json`` (None where the file or a count is missing: not measured yet) and their shares;
    ``introspection`` False for a control or the baseline, which have none."""
    rows = []
    for arm, personas in arms.items():
        for m in personas:
            character = m["variant_kind"] == "character"
            path = metrics_dir / m["variant"] / "introspect.json"
            record = json.loads(path.read_text(encoding="utf-8")) if character and path.is_file() else {}
            row: dict[str, Any] = {"variant": m["variant"], "arm": arm, "introspection": character}
            row |= {key: record.get(key) for key in (*COUNTS, "truncated_by_reason")}
            row |= {name: _share(row[num], row[den]) for name, (_, num, den) in SHARES.items()}
            rows.append(row)
    return rows


def arm_shares(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Per character arm, each share pooled over its personas that have both counts (None: none has)."""
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        if row["introspection"]:
            grouped.setdefault(row["arm"], []).append(row)
    result = {}
    for arm, members in grouped.items():
        shares: dict[str, float | None] = {}
        for name, (_, num, den) in SHARES.items():
            counted = [r for r in members if r[num] is not None and r[den] is not None]
            shares[name] = _share(sum(r[num] for r in counted), sum(r[den] for r in counted))
        result[arm] = shares
    return result


def introspection_warning(rows: Sequence[Mapping[str, Any]], tolerance: float) -> list[str]:
    """A report warning when two character arms' shares (``arm_shares``) differ by more than
    ``tolerance`` (a difference of shares: 0.05 is 5 percentage points); no lines otherwise."""
    shares = arm_shares(rows)
    spans = []
    for name, (label, _, _) in SHARES.items():
        known = sorted((value, arm) for arm, s in shares.items() if (value := s[name]) is not None)
        if len(known) > 1 and known[-1][0] - known[0][0] > tolerance + 1e-9:
            (low, low_arm), (high, high_arm) = known[0], known[-1]
            spans.append(f"{label} from {low:.0%} ({low_arm}) to {high:.0%} ({high_arm})")
    if not spans:
        return []
    return [
        f"> **⚠ INTROSPECTION CUT UNEQUALLY**: the character arms' self-interaction data differ by more "
        f"than {tolerance * 100:g} percentage points (`controls.token_tolerance`): {'; '.join(spans)}. "
        'These arms trained on different amounts of self-interaction (table "Introspection", with why '
        "each conversation was cut); a context_limit cut is sized by `models.student.max_model_len`, "
        "`introspection.turns` and `introspection.max_new_tokens`.",
        "",
    ]


def _count(row: Mapping[str, Any], key: str, of: str | None = None) -> str:
    """A count, with its share of ``of`` where both are known; n/a where it was not measured."""
    value = row[key]
    if value is None:
        return "n/a"
    share = _share(value, row[of]) if of else None
    return f"{value:,}" + ("" if share is None else f" ({share:.0%})")


def introspection_section(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Per persona: self-interaction conversations asked, kept complete, kept truncated (and why), dropped,
    and turns kept of those asked."""
    if not rows:
        return []
    table = []
    for r in rows:
        if not r["introspection"]:
            table.append([r["variant"], *["none"] * 6])
            continue
        reasons = r["truncated_by_reason"]
        table.append(
            [
                r["variant"],
                _count(r, "conversations_asked"),
                _count(r, "complete_conversations", "conversations_asked"),
                _count(r, "truncated_conversations", "conversations_asked"),
                "n/a"
                if reasons is None
                else ", ".join(f"{k} {n}" for k, n in sorted(reasons.items())) or "–",
                _count(r, "dropped_conversations", "conversations_asked"),
                "n/a"
                if r["turns_kept"] is None or r["turns_asked_total"] is None
                else f"{r['turns_kept']:,} / {r['turns_asked_total']:,}"
                + ("" if r["turns_share"] is None else f" ({r['turns_share']:.0%})"),
            ]
        )
    header = [
        "variant",
        "asked",
        "kept complete",
        "kept truncated",
        "why cut",
        "dropped",
        "turns kept / asked",
    ]
    return [
        "## Introspection: self-interaction kept",
        "",
        "Self-interaction conversations of each persona's introspection (its SFT data): a conversation whose "
        "next turn would pass the student's context, or fails, keeps its complete turns (kept truncated) "
        "or, below `introspection.min_exchanges`, is dropped. Arms that kept different shares trained on "
        "different self-interaction. none: a control or the baseline, which have no introspection; n/a: "
        "not in the introspect stage's metrics.",
        "",
        *md_table(header, table),
        "",
    ]
