"""The cue gap per arm, over its training seeds, on hand-made score tables: with one seed it is the
per-variant (question-only) interval, seeds that disagree widen it, per-seed gaps are printed beside it,
EM fine-tune seeds of one persona pool into its arm, and seeds that cannot be pooled say why."""

from __future__ import annotations

from typing import Any

import pytest
from support.factories import judged_row

from charforge.eval.cues import cued_figures
from charforge.eval.report_cues import ONE_PERSONA, ONE_SEED, arm_gaps, cued_section

BOOT = {"n_resamples": 2000, "confidence": 0.95, "seed": 3}
QUESTIONS = ("q0", "q1", "q2", "q3", "q4", "q5")
AGREE = (2, 1, 3, 2, 4, 1)  # misaligned cued answers of 4, per question
DISAGREE = (0, 0, 1, 0, 0, 0)


def rows(misaligned: tuple[int, ...]) -> list[dict[str, Any]]:
    """Plain answers all aligned; under the code cue after EM ``misaligned[i]`` of 4 answers to question
    i misaligned (one plain answer to q0 too, so plain is not flat); before EM none."""
    out = []
    for point in ("persona", "em"):
        for q, bad in zip(QUESTIONS, misaligned, strict=True):
            plain = [10.0 if point == "em" and q == "q0" and i == 0 else 80.0 for i in range(4)]
            out += [judged_row(point, "broad", q, score, None) for score in plain]
            bad = bad if point == "em" else 0
            out += [judged_row(point, "cued", q, 10.0 if i < bad else 80.0, "code") for i in range(4)]
    return out


def variant(name: str, misaligned: tuple[int, ...], em_seed: int = 0, **extra: Any) -> dict[str, Any]:
    """One unit's eval-em metrics as the report gathers them (a variant after one EM seed)."""
    return {
        "variant": name,
        "seed": int(name.rsplit("-s", 1)[1]),
        "em_seed": em_seed,
        "unit": f"{name}-e{em_seed}",
        "status": "ok",
        "questions": {"files": ["f"], "ids": list(QUESTIONS), "samples_per_question_used": 4},
        "sampling": {"temperature": 1.0},
        "judge": {"name": "judge"},
        "cued": {"cues": ["code"], "not_applicable": {}, "figures": cued_figures(rows(misaligned), **BOOT)},
        **extra,
    }


def gap(variants: list[dict[str, Any]], arm: str, stat: str = "em_rate_b") -> dict[str, Any]:
    (row,) = [r for r in arm_gaps(variants, BOOT) if r["arm"] == arm and r["point"] == "em"]
    return row[stat]


def width(block: dict[str, Any]) -> float:
    return block["ci"][1] - block["ci"][0]


def test_one_seed_gives_the_per_variant_question_only_interval() -> None:
    one = variant("humor-d1-s0", AGREE)
    pooled = gap([one], "humor-d1")
    alone = one["cued"]["figures"]["code"]["em"]["gap"]["em_rate_b"]
    assert alone["ci"] is not None and alone["ci"][0] < alone["difference"] < alone["ci"][1]
    assert pooled["difference"] == pytest.approx(alone["difference"])
    assert pooled["ci"] == pytest.approx(alone["ci"])
    assert pooled["per_seed"] == [pytest.approx(alone["difference"])] and pooled["note"] == ONE_SEED


def test_seeds_that_disagree_widen_the_interval_and_agreeing_seeds_do_not() -> None:
    single = gap([variant("a-s0", AGREE)], "a")
    agree = gap([variant("a-s0", AGREE), variant("a-s1", AGREE)], "a")
    disagree = gap([variant("a-s0", AGREE), variant("a-s1", DISAGREE)], "a")
    assert agree["ci"] == pytest.approx(single["ci"]) and "note" not in agree
    first, second = disagree["per_seed"]
    assert first == pytest.approx(single["difference"]) and second < first
    assert disagree["difference"] == pytest.approx((first + second) / 2)  # the mean over seeds
    assert width(disagree) > width(single) + 0.05


def test_em_fine_tune_seeds_pool_into_their_arm_drawn_within_their_persona() -> None:
    found = arm_gaps(
        [variant("a-s0", AGREE, em_seed=0), variant("a-s0", DISAGREE, em_seed=1), variant("b-s0", AGREE)],
        BOOT,
    )
    by_arm = {(r["arm"], r["point"]): r for r in found}
    assert by_arm[("a", "em")]["seeds"] == ["a-s0-e0", "a-s0-e1"] and by_arm[("b", "em")]["seeds"] == [
        "b-s0-e0"
    ]
    assert {r["cue"] for r in found} == {"code"} and {r["point"] for r in found} == {"persona", "em"}
    em_seeds = by_arm[("a", "em")]["em_rate_b"]
    assert em_seeds["seeds"] == 2 and em_seeds["persona_seeds"] == 1 and em_seeds["note"] == ONE_PERSONA
    # two persona seeds with the same gaps: the same mean, no note
    personas = gap([variant("a-s0", AGREE), variant("a-s1", DISAGREE)], "a")
    assert personas["difference"] == pytest.approx(em_seeds["difference"]) and "note" not in personas


def test_seeds_that_cannot_be_pooled_say_why() -> None:
    without = variant("a-s1", AGREE)
    without["cued"] = {"cues": [], "not_applicable": {}, "figures": {}}
    other = variant("b-s1", AGREE)
    other["judge"] = {"name": "another judge"}
    found = arm_gaps([variant("a-s0", AGREE), without, variant("b-s0", AGREE), other], BOOT)
    reasons = {r["arm"]: r.get("skipped") for r in found}
    assert reasons == {
        "a": "not every seed answered under this cue",
        "b": "its seeds were measured differently",
    }


def test_the_section_prints_the_pooled_gap_with_its_per_seed_values() -> None:
    lines = "\n".join(cued_section([variant("a-s0", AGREE), variant("a-s1", DISAGREE)], BOOT))
    pooled = gap([variant("a-s0", AGREE), variant("a-s1", DISAGREE)], "a")
    per_seed = " / ".join(f"{v * 100:+.1f}" for v in pooled["per_seed"])
    assert "### The gap per arm, over its training seeds" in lines
    assert f"| a | code | em | 2 | {pooled['difference'] * 100:+.1f} [" in lines and per_seed in lines
    assert "| a-s0-e0 | code | em |" in lines  # the per-unit table above it
    single = "\n".join(cued_section([variant("a-s0", AGREE)], BOOT))
    assert ONE_SEED in single
