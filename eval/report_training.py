"""The report's training-data sections: how much of the self-interaction it asked for each persona kept
(docs/design.md §1–2), with a warning when the character arms kept unequal shares; and each persona's EM
training set (examples, tokens, examples without their reflection turn), with a warning when their
sizes differ.

A self-interaction conversation that reaches the student's context (or whose next turn fails) keeps its
complete turns, counted as truncated, or is dropped below ``introspection.min_exchanges``
(``charforge.generators.introspect``). Arms held equal in everything the pipeline controls may then still
train on different amounts of self-interaction: a difference the report shows, per persona, from
``metrics/<variant>/introspect.json``. Controls and the baseline write no introspection ("none", not 0).
The EM training sets come from ``metrics/<variant>/em-data.json``.

Input columns / Output columns: none (functions from metrics files to rows and markdown lines).

Runtime parameters: ``controls.token_tolerance`` (the report's: how far, relatively, two character arms'
shares of the turns asked that they kept may differ before the report warns, as their tokens may).
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
# Each persona's shares of its introspection counts (numerator, denominator); the warning reads turns_share
SHARES = {
    "truncated_share": ("truncated_conversations", "conversations_asked"),
    "turns_share": ("turns_kept", "turns_asked_total"),
}


def optional_json(path: Path) -> dict[str, Any] | None:
    """A stage's metrics file, None when that stage has not written it yet."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


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
            record = (optional_json(path) if character else None) or {}
            row: dict[str, Any] = {"variant": m["variant"], "arm": arm, "introspection": character}
            row |= {key: record.get(key) for key in (*COUNTS, "truncated_by_reason")}
            row |= {name: _share(row[num], row[den]) for name, (num, den) in SHARES.items()}
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
        for name, (num, den) in SHARES.items():
            counted = [r for r in members if r[num] is not None and r[den] is not None]
            shares[name] = _share(sum(r[num] for r in counted), sum(r[den] for r in counted))
        result[arm] = shares
    return result


def introspection_warning(rows: Sequence[Mapping[str, Any]], tolerance: float) -> list[str]:
    """A report warning when two character arms' shares of the self-interaction turns asked that they
    kept (``arm_shares``) differ by more than ``tolerance`` relative to the smaller one: the tolerance
    and the measure of the controls' token matching (how much training data an arm has), so the two
    warnings hold arms to one standard. No lines otherwise; the table shows every count."""
    known = sorted(
        (value, arm) for arm, s in arm_shares(rows).items() if (value := s["turns_share"]) is not None
    )
    if len(known) < 2:
        return []
    (low, low_arm), (high, high_arm) = known[0], known[-1]
    if high <= low * (1 + tolerance) + 1e-9:
        return []
    gap = "all" if low == 0 else f"{high / low - 1:.0%} more"
    return [
        f"> **⚠ INTROSPECTION CUT UNEQUALLY**: the character arms kept from {low:.0%} ({low_arm}) to "
        f"{high:.0%} ({high_arm}) of the self-interaction turns asked ({gap}), beyond the "
        f"{tolerance:.0%} their training tokens are held to (`controls.token_tolerance`). These arms "
        'trained on different amounts of self-interaction (table "Introspection", with why each '
        "conversation was cut); a context_limit cut is sized by `models.student.max_model_len`, "
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


def em_data_rows(metrics_dir: Path, arms: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """One row per persona of ``arms``: its EM training set from ``em-data.json`` (None where not
    written yet): examples, tokens and the examples kept without their reflection turn (H4)."""
    rows = []
    for arm, personas in arms.items():
        for m in personas:
            record = optional_json(metrics_dir / m["variant"] / "em-data.json") or {}
            without = record.get("without_reflection")
            rows.append(
                {
                    "variant": m["variant"],
                    "arm": arm,
                    "examples": record.get("rows"),
                    "tokens": (record.get("tokens") or {}).get("total"),
                    "without_reflection": None if without is None else sum(without.values()),
                }
            )
    return rows


def em_data_warning(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """A report warning when personas trained on different numbers of EM examples (``em_data.rows``
    makes them equal; without it, or across runs of other settings, they may not be)."""
    counts = sorted({row["examples"] for row in rows if row["examples"] is not None})
    if len(counts) < 2:
        return []
    return [
        f"> **⚠ EM TRAINING SETS DIFFER IN SIZE**: the personas' EM fine-tunes trained on {counts[0]:,} to "
        f"{counts[-1]:,} examples, so they took different numbers of optimizer steps: set `em_data.rows` "
        '(table "EM training data").',
        "",
    ]


def em_data_section(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Per persona: EM training examples and tokens, and examples without their reflection turn."""
    if not rows:
        return []

    def cell(value: int | None) -> str:
        return "n/a" if value is None else f"{value:,}"

    table = [
        [r["variant"], cell(r["examples"]), cell(r["tokens"]), cell(r["without_reflection"])] for r in rows
    ]
    return [
        "## EM training data",
        "",
        "The EM examples each persona's EM fine-tune trained on (the same examples in every arm: em-generate "
        "writes them once; `em_data.rows` takes as many in every run), their tokens (reflection turns "
        "included), and, with `em_data.reflection` on, the examples whose reflection failed a filter and "
        "were kept without it (`metrics/<v>/em-data.json` gives the reasons).",
        "",
        *md_table(["variant", "examples", "tokens", "without reflection"], table),
        "",
    ]
