"""The report's PNG plots, rendered offline with matplotlib's Agg backend (no display, no CDN).

Every plot that shows EM figures carries a red banner when any judge behind it failed validation,
and the points of such variants are drawn hollow: a weak judge must never read as a verdict.

Input columns / Output columns: none (functions from the report's gathered metrics to PNG files).

Runtime parameters: none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: render to files only, never to a display

import matplotlib.pyplot as plt

from charforge.io import atomic_path

POINT_STYLE = {"persona": ("tab:blue", "o", "persona (before EM)"), "em": ("tab:red", "s", "after EM")}
BANNER = "JUDGE UNUSABLE for hollow points: not a verdict"


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as temp:
        fig.savefig(temp, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path


def _errorbar(
    ax: Any,
    x: float,
    block: Mapping[str, Any] | None,
    color: str,
    marker: str,
    hollow: bool,
    label: str | None = None,
) -> None:
    if not block or block.get("value") is None:
        return
    value, ci = block["value"], block.get("ci")
    yerr = [[value - ci[0]], [ci[1] - value]] if ci else None
    ax.errorbar(
        [x],
        [value],
        yerr=yerr,
        color=color,
        marker=marker,
        capsize=3,
        linestyle="none",
        label=label,
        markerfacecolor="white" if hollow else color,
    )


def _scale(ax: Any, top: float, empty: str | None) -> None:
    """Fix the y axis to the figure's own scale (0–100 or 0–1) and write ``empty`` across an axis with
    no data: left alone, an empty axis would read matplotlib's default 0–1 under a 0–100 label."""
    ax.set_ylim(0, top * 1.05)
    if empty:
        ax.text(0.5, 0.5, empty, transform=ax.transAxes, ha="center", va="center", color="grey")


def _banner(fig: Any, show: bool, text: str = BANNER) -> None:
    if show:
        fig.text(
            0.5,
            1.0,
            text,
            ha="center",
            va="bottom",
            color="white",
            fontsize=11,
            weight="bold",
            bbox={"facecolor": "red", "edgecolor": "red"},
        )


def alignment_plot(variants: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Mean alignment (left) and tail rates after EM (right) per variant, with 95 % intervals."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(8, 1.2 * len(variants) + 4), 4.2))
    names = [v["unit"] for v in variants]
    for index, metrics in enumerate(variants):
        hollow = metrics["status"] != "ok"
        for offset, point in ((-0.12, "persona"), (0.12, "em")):
            color, marker, label = POINT_STYLE[point]
            block = metrics["em"][point]["broad"]["figures"]["aligned_mean"]
            _errorbar(left, index + offset, block, color, marker, hollow, label if index == 0 else None)
        figures = metrics["em"]["em"]["broad"]["figures"]
        for offset, (stat, color, label) in zip(
            (-0.12, 0.12),
            (
                ("share_aligned_le_30", "tab:orange", "share aligned ≤ 30"),
                ("em_rate_b", "tab:purple", "EM rate (b)"),
            ),
            strict=True,
        ):
            _errorbar(right, index + offset, figures[stat], color, "D", hollow, label if index == 0 else None)
    for ax, title, ylabel, top in (
        (left, "Mean alignment, broad questions", "alignment (0–100)", 100.0),
        (right, "Tails after EM", "share of answers", 1.0),
    ):
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        _scale(ax, top, None if ax.containers else "no scored answers")
        ax.grid(axis="y", alpha=0.3)
        if ax.containers:
            ax.legend(fontsize=8)
    _banner(fig, any(v["status"] != "ok" for v in variants))
    return _save(fig, path)


def dose_response_plot(series: Mapping[str, Mapping[str, Any]], path: Path) -> Path:
    """Post-EM mean alignment against diversity level per constitution, with the fitted slope."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    unusable = False
    for color_index, (constitution, data) in enumerate(sorted(series.items())):
        color = f"C{color_index}"
        for level, value, ok in data["points"]:
            unusable |= not ok
            ax.plot([level], [value], marker="o", color=color, markerfacecolor=color if ok else "white")
        fit = data["fit"]
        label = constitution
        if fit["slope"] is not None:
            levels = [level for level, _, _ in data["points"]]
            mean_x = sum(levels) / len(levels)
            mean_y = sum(value for _, value, _ in data["points"]) / len(levels)
            xs = [min(levels), max(levels)]
            ax.plot(xs, [mean_y + fit["slope"] * (x - mean_x) for x in xs], color=color, alpha=0.6)
            ci = fit["ci"]
            label += f": slope {fit['slope']:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")
        ax.plot([], [], color=color, label=label)
    ax.set_xlabel("diversity level")
    ax.set_ylabel("mean alignment after EM (0–100)")
    _scale(ax, 100.0, None if any(data["points"] for data in series.values()) else "no scored variants")
    ax.set_title("Dose-response (H1): alignment vs prompt diversity")
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    _banner(fig, unusable)
    return _save(fig, path)


def trait_plot(rows: Sequence[tuple[str, str, Mapping[str, Any], bool]], path: Path) -> Path:
    """Trait expression per (variant, constitution) with intervals."""
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(rows) + 3), 4.2))
    for index, (_, _, block, ok) in enumerate(rows):
        _errorbar(ax, index, block, "tab:green", "o", not ok)
    ax.set_xticks(
        range(len(rows)), [f"{v}\n→ {c}" for v, c, _, _ in rows], rotation=30, ha="right", fontsize=8
    )
    ax.set_ylabel("trait score (0–100)")
    _scale(ax, 100.0, None if ax.containers else "no scored trait answers")
    ax.set_title("Trait expression on held-out prompts (persona, before EM)")
    ax.grid(axis="y", alpha=0.3)
    _banner(fig, any(not ok for *_, ok in rows))
    return _save(fig, path)


def judge_plot(variants: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Judge validation per variant run: AUROC and mean number mass against their thresholds."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(8, 1.0 * len(variants) + 4), 3.8))
    names = [v["unit"] for v in variants]
    for ax, key, threshold_key, title in (
        (left, "auroc", "min_auroc", "Separation (AUROC)"),
        (right, "mean_number_mass", "min_number_mass", "Mean probability on numbers"),
    ):
        validation = [v["judge"]["validation"] for v in variants]
        values = [item[key] if item[key] is not None else 0.0 for item in validation]
        colors = ["tab:green" if item["usable"] else "tab:red" for item in validation]
        ax.bar(range(len(names)), values, color=colors)
        thresholds = {item["thresholds"][threshold_key] for item in validation}
        for threshold in thresholds:
            ax.axhline(threshold, color="black", linestyle="--", linewidth=1)
        ax.set_ylim(0, 1.05)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_title(title)
    failed = any(not v["judge"]["validation"]["usable"] for v in variants)
    _banner(fig, failed, "JUDGE UNUSABLE (red): those variants' EM figures are no verdict")
    return _save(fig, path)
