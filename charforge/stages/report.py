"""Stage `report`: every variant's EM metrics in one markdown report with offline PNG plots.

Reads: params ``PARAMS`` (the bootstrap settings); ``metrics/*/eval-em.json``.
Writes: ``reports/report.md``, ``reports/summary.json`` and the PNG plots beside them.
"""

from __future__ import annotations

from pathlib import Path

from charforge.params import DEFAULT_PARAMS, load_section
from charforge.paths import METRICS, REPORTS
from charforge.schemas.params import EvalConfig

PARAMS = ("eval.bootstrap_resamples", "eval.confidence", "eval.seed")


def run(params: Path = DEFAULT_PARAMS, root: Path = Path(".")) -> Path:
    from charforge.eval.report import write_report

    config = load_section(EvalConfig, "eval", params)
    boot = {"n_resamples": config.bootstrap_resamples, "confidence": config.confidence, "seed": config.seed}
    return write_report(root / METRICS, root / REPORTS, boot)
