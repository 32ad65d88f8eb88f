"""Agreement between judges: Krippendorff's α (interval level) with a bootstrap interval by question.

Published EM rates of the same answers move several-fold with the judge, so a run may score every
answer with several judges (``models.judge`` and ``models.judges``). Their figures are reported per
judge, never pooled; this module says how far they agree. Units are answers, coders are judges, values
are the judges' 0–100 scores rounded to whole points: the ``krippendorff`` package builds a value-by-value
coincidence matrix, and continuous scores would make it as large as the number of answers (measured:
54 s for one α over 400 answers and 3 judges, 0.03 s rounded; α moved by under 0.001). Answers fewer
than two judges scored (unscored: refusal, code, low number mass) are not pairable and are left out.
The interval resamples questions, as every other interval of the report does (answers to one question
are correlated); α needs variation, so a set where every judge gives one constant score has none.

Input columns / Output columns: none (a library); eval-em writes ``judge_agreement``.

Runtime parameters: ``eval.bootstrap_resamples``, ``eval.confidence``, ``eval.seed``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from charforge.eval.metrics import percentile_interval, resample_counts

SCALE = list(range(101))  # the judges' scale in whole points


def _alpha(value_counts: np.ndarray) -> float | None:
    import krippendorff

    if value_counts.shape[0] == 0 or np.count_nonzero(value_counts.sum(axis=0)) < 2:
        return None  # one value in all: α is undefined (no variation to agree on)
    alpha = float(
        krippendorff.alpha(value_counts=value_counts, level_of_measurement="interval", value_domain=SCALE)
    )
    return alpha if math.isfinite(alpha) else None


def krippendorff_alpha(
    units: Sequence[tuple[str, Sequence[float | None]]],
    *,
    n_resamples: int,
    confidence: float,
    seed: int,
) -> dict[str, Any]:
    """α over ``units`` (question id, one score per judge or None), with an interval by question."""
    pairable = [(question, scores) for question, scores in units if sum(s is not None for s in scores) >= 2]
    counts = np.zeros((len(pairable), len(SCALE)))
    for row, (_, scores) in enumerate(pairable):
        for score in scores:
            if score is not None:
                counts[row, round(score)] += 1
    questions = sorted({question for question, _ in pairable})
    result: dict[str, Any] = {
        "alpha": _alpha(counts),
        "ci": None,
        "units": len(pairable),
        "unpairable": len(units) - len(pairable),
        "questions": len(questions),
    }
    if result["alpha"] is None or len(questions) < 2:
        return result
    rows_of = {q: [row for row, (question, _) in enumerate(pairable) if question == q] for q in questions}
    draws = resample_counts(len(questions), n_resamples, seed)
    alphas = []
    for draw in draws:
        rows = [
            row for q, times in zip(questions, draw, strict=True) for _ in range(times) for row in rows_of[q]
        ]
        value = _alpha(counts[rows])
        alphas.append(np.nan if value is None else value)
    result["ci"] = percentile_interval(np.array(alphas), confidence)
    return result


def judge_agreement(
    rows: Sequence[dict[str, Any]],
    judges: Sequence[str],
    *,
    n_resamples: int,
    confidence: float,
    seed: int,
    question_set: str = "broad",
) -> dict[str, Any]:
    """Per metric (aligned, coherent) and evaluation point: α between ``judges`` on the answers of
    ``question_set``. Empty when there is one judge."""
    from charforge.eval.metrics import POINTS

    if len(judges) < 2:
        return {}
    result: dict[str, Any] = {"judges": list(judges), "question_set": question_set, "metrics": {}}
    for metric in ("aligned", "coherent"):
        per_point = {}
        for point in POINTS:
            units = []
            for row in rows:
                if row["point"] != point or row["question_set"] != question_set:
                    continue
                by_judge = {s["judge"]: s["score"] for s in row["scores"] if s["metric"] == metric}
                units.append((row["question_id"], [by_judge.get(judge) for judge in judges]))
            per_point[point] = krippendorff_alpha(
                units, n_resamples=n_resamples, confidence=confidence, seed=seed
            )
        result["metrics"][metric] = per_point
    return result
