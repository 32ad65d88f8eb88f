"""Stage `report`: every variant's EM metrics in one markdown report with offline PNG plots.

Reads: params ``PARAMS`` (the bootstrap settings; the controls, the character variants they are
compared with and the token tolerance; the grid and EM seeds, which say which units are this
experiment's, and its EM defences); ``metrics/*/eval-em-e<seed>.json``, the defended units'
``metrics/*/eval-em-<defence>-e<seed>.json`` and the training metrics.
Writes: ``reports/report.md``, ``reports/summary.json`` and the PNG plots beside them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from charforge.io import load_yaml, read_text
from charforge.params import DEFAULT_PARAMS, load_section, recorded
from charforge.paths import METRICS, REPORTS, em_seed_suffix
from charforge.schemas.params import ControlsConfig, DefencesGrid, EmFinetuneConfig, EvalConfig

PARAMS = (
    "eval.bootstrap_resamples",
    "eval.confidence",
    "eval.seed",
    "controls.reference",
    "controls.token_tolerance",
    "grid.character",
    "grid.controls",
    "grid.baselines",
    "grid.defences",
    "grid.defended",
    "em_finetune.seeds",
)


def run(params: Path = DEFAULT_PARAMS, root: Path = Path(".")) -> Path:
    from charforge.eval.report import write_report

    config = load_section(EvalConfig, "eval", params)
    boot = {"n_resamples": config.bootstrap_resamples, "confidence": config.confidence, "seed": config.seed}
    return write_report(
        root / METRICS,
        root / REPORTS,
        boot,
        control_arms(params),
        expected_units(params),
        expected_defended_units(params),
    )


def expected_units(params: Path) -> list[str] | None:
    """Every unit this grid evaluates (``<variant>-e<seed>``: each variant of ``grid`` after each seed of
    ``em_finetune.seeds``), or None for a params file with no ``grid`` (every metrics file is read).
    Metrics files left from an earlier grid or seed list are not this experiment's: the report leaves
    them out and says so."""
    document, _ = load_yaml(read_text(params))
    if not isinstance(document.data, dict) or "grid" not in document.data:
        return None
    grid = document.data["grid"] if isinstance(document.data["grid"], dict) else {}
    section = document.data.get("em_finetune")
    seeds = load_section(EmFinetuneConfig, "em_finetune", params).seeds if section else [0]
    variants = [str(name) for key in ("character", "controls", "baselines") for name in grid.get(key) or []]
    return [f"{variant}-{em_seed_suffix(seed)}" for variant in variants for seed in seeds]


def expected_defended_units(params: Path) -> list[str]:
    """Every defended unit this grid evaluates (``<variant>-<defence>-e<seed>``: each variant of
    ``grid.defended`` under each defence of ``grid.defences`` after each EM seed)."""
    document, _ = load_yaml(read_text(params))
    if not isinstance(document.data, dict) or "grid" not in document.data:
        return []
    grid = load_section(DefencesGrid, "grid", params)
    section = document.data.get("em_finetune")
    seeds = load_section(EmFinetuneConfig, "em_finetune", params).seeds if section else [0]
    return [
        f"{variant}-{em_seed_suffix(seed, defence)}"
        for variant in grid.defended.all
        for defence in grid.defences
        for seed in seeds
    ]


def control_arms(params: Path) -> dict[str, Any] | None:
    """The controls of the grid and the character variants of ``controls.reference`` in the grid
    (docs/design.md §1, H2), with the tolerance their training tokens are held to; None for a params
    file with no ``controls`` or ``grid`` (an evaluation-only project: no such table)."""
    document, _ = load_yaml(read_text(params))
    if not isinstance(document.data, dict) or not {"controls", "grid"} <= document.data.keys():
        return None
    controls = load_section(ControlsConfig, "controls", params)
    grid = recorded(("grid.character", "grid.controls"), params)
    return {
        "controls": list(grid["grid.controls"] or []),
        "references": [name for name in controls.references if name in (grid["grid.character"] or [])],
        "tolerance": controls.token_tolerance,
    }
