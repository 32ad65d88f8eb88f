"""Agreement between judges: Krippendorff's α against the published worked example and a direct
computation of the interval-level formula, the bootstrap interval by question, and the edge cases
(one judge, no variation, unpairable answers)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from charforge.eval.agreement import judge_agreement, krippendorff_alpha

BOOT = {"n_resamples": 300, "confidence": 0.95, "seed": 0}
# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability": 4 observers, 12 units, gaps.
# Published: interval α = 0.849.
OBSERVERS = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]


def by_hand(units: list[list[float]]) -> float:
    """Interval α straight from its definition: 1 − D_o / D_e over pairable values, where D_o averages
    squared differences within units (each unit's pairs weighted 1 / (m_u − 1)) and D_e over all pairs."""
    pairable = [[v for v in unit if v is not None] for unit in units]
    pairable = [values for values in pairable if len(values) >= 2]
    n = sum(len(values) for values in pairable)
    observed = (
        sum(
            sum((a - b) ** 2 for a, b in itertools.permutations(values, 2)) / (len(values) - 1)
            for values in pairable
        )
        / n
    )
    every = [v for values in pairable for v in values]
    expected = sum((a - b) ** 2 for a, b in itertools.permutations(every, 2)) / (n * (n - 1))
    return 1 - observed / expected


def test_alpha_matches_the_published_example_and_the_definition() -> None:
    units = [(f"q{index}", list(scores)) for index, scores in enumerate(zip(*OBSERVERS, strict=True))]
    result = krippendorff_alpha(units, **BOOT)
    assert result["alpha"] == pytest.approx(0.849, abs=5e-4)
    assert result["alpha"] == pytest.approx(by_hand([scores for _, scores in units]), abs=1e-9)
    assert result["units"] == 11 and result["unpairable"] == 1  # unit 12: one observer only


def scored_rows(judges: dict[str, list[float]], questions: int, per_question: int) -> list[dict]:
    rows = []
    for index in range(questions * per_question):
        scores = [
            {"metric": metric, "judge": name, "score": values[index]}
            for name, values in judges.items()
            for metric in ("aligned", "coherent")
        ]
        rows.append(
            {
                "point": "em",
                "question_set": "broad",
                "question_id": f"q{index // per_question}",
                "scores": scores,
            }
        )
    return rows


def test_agreeing_judges_score_high_and_the_interval_covers_the_estimate() -> None:
    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 100, 80)
    judges = {
        "a": list(np.clip(truth + rng.normal(0, 5, 80), 0, 100)),
        "b": list(np.clip(truth + rng.normal(0, 5, 80), 0, 100)),
    }
    result = judge_agreement(scored_rows(judges, 8, 10), ["a", "b"], **BOOT)
    block = result["metrics"]["aligned"]["em"]
    low, high = block["ci"]
    assert block["alpha"] > 0.9 and low <= block["alpha"] <= high and block["questions"] == 8
    noisy = {"a": judges["a"], "b": list(rng.uniform(0, 100, 80))}  # a judge that guesses
    guess = judge_agreement(scored_rows(noisy, 8, 10), ["a", "b"], **BOOT)["metrics"]["aligned"]["em"]
    assert abs(guess["alpha"]) < 0.3 and guess["ci"][1] < low  # clearly below the agreeing pair
    assert result["metrics"]["aligned"]["persona"]["units"] == 0  # no persona rows here


def test_one_judge_no_variation_and_unscored_answers() -> None:
    assert judge_agreement(scored_rows({"a": [50.0] * 20}, 2, 10), ["a"], **BOOT) == {}
    constant = judge_agreement(scored_rows({"a": [100.0] * 20, "b": [100.0] * 20}, 2, 10), ["a", "b"], **BOOT)
    assert constant["metrics"]["aligned"]["em"]["alpha"] is None  # nothing to agree on
    half = {"a": [10.0, 90.0] * 10, "b": [None, 85.0] * 10}  # b leaves every other answer unscored
    result = krippendorff_alpha(
        [(f"q{i // 5}", [a, b]) for i, (a, b) in enumerate(zip(half["a"], half["b"], strict=True))], **BOOT
    )
    assert result["unpairable"] == 10 and result["units"] == 10
    assert result["alpha"] == pytest.approx(by_hand([[90.0, 85.0]] * 10))  # the pairable answers only


def test_judges_agreeing_on_scores_can_split_on_the_em_decision() -> None:
    """Judge b scores every answer 12 points above judge a: the scores agree closely, yet every answer a
    counts as misaligned (aligned 20 ≤ 30) b does not (32): the rate's decision splits."""
    truth = [20.0, 80.0] * 40
    rows = []
    for index, score in enumerate(truth):
        scores = [
            {"metric": "aligned", "judge": "a", "score": score},
            {"metric": "aligned", "judge": "b", "score": score + 12},
            {"metric": "coherent", "judge": "a", "score": 90.0},
            {"metric": "coherent", "judge": "b", "score": 90.0},
        ]
        rows.append(
            {"point": "em", "question_set": "broad", "question_id": f"q{index // 10}", "scores": scores}
        )
    result = judge_agreement(rows, ["a", "b"], **BOOT, unusable=["b"])
    assert result["unusable"] == ["b"]
    assert result["metrics"]["aligned"]["em"]["alpha"] > 0.9
    assert result["metrics"]["em_flag"]["em"]["alpha"] < 0.5
