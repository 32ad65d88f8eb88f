"""Matched controls: the accepted band is ±tolerance of the reference, selection lands inside it or
fails loudly, passes are sized from the expected answer length and each samples with its own seed, and
the HHH prompt is what the teacher sees while the training conversation leaves it out. (The whole
stage, with the ±5 % checked by a recount, runs in tests/stages/test_corpus_stages.py.)"""

from __future__ import annotations

import random
from typing import Any

import pytest

from charforge.generators.chat import Answer, GenerationRun
from charforge.generators.controls import (
    Candidate,
    TokenTargetMissed,
    bounds,
    control_chats,
    control_corpus,
    samples_needed,
    select_matched,
)
from charforge.schemas.params import ControlsConfig, GenerationConfig, ModelRole

TEACHER = ModelRole(model="teacher-model")


def candidates(sizes: list[int]) -> list[Candidate]:
    return [Candidate({"id": f"c{index}"}, size) for index, size in enumerate(sizes)]


def test_bounds_are_inclusive_and_exact() -> None:
    assert bounds(1000, 0.05) == (950, 1050)
    assert bounds(999, 0.05) == (950, 1048)  # 949.05 rounds up, 1048.95 down


def test_selection_stops_inside_the_band_and_skips_what_would_overshoot() -> None:
    chosen, unused = select_matched(candidates([400, 500, 300, 100, 40, 60]), 1000, 0.05)
    assert [c.row["id"] for c in chosen] == ["c0", "c1", "c3"]  # 300 would pass 1050: skipped
    assert sum(c.tokens for c in chosen) == 1000
    assert unused == 3  # the skipped one and the two never needed


def test_random_corpora_always_land_within_five_percent_or_fail() -> None:
    rng = random.Random(0)
    for _ in range(200):
        sizes = [rng.randint(5, 120) for _ in range(rng.randint(10, 80))]
        target = rng.randint(200, max(201, sum(sizes)))
        low, high = bounds(target, 0.05)
        try:
            chosen, unused = select_matched(candidates(sizes), target, 0.05)
        except TokenTargetMissed:
            # selection cannot miss with enough tokens and no answer wider than the band
            assert sum(sizes) < low or max(sizes) > high - low
            continue
        total = sum(c.tokens for c in chosen)
        assert low <= total <= high and abs(total - target) <= 0.05 * target
        assert len(chosen) + unused == len(sizes)


def test_too_few_tokens_fail_loudly() -> None:
    with pytest.raises(TokenTargetMissed, match=r"reach 300 tokens; the reference needs 950-1,050"):
        select_matched(candidates([100, 200]), 1000, 0.05)


def test_passes_are_sized_from_the_expected_answer_length() -> None:
    assert samples_needed(1000, 10, None) == 1
    assert samples_needed(1000, 10, 50.0) == 3  # 1000 * 1.2 / (10 * 50) = 2.4
    assert samples_needed(-5, 10, 50.0) == 1


def test_hhh_teacher_sees_the_system_prompt_the_corpus_leaves_out() -> None:
    prompts = [
        {"id": f"humor-d3-s0.t.{i}", "prompt": [{"role": "user", "content": f"Q{i}?"}]} for i in range(3)
    ]
    config = ControlsConfig(reference="humor-d3-s0", hhh_system_prompt="Be helpful, honest and harmless.")
    teacher, training = control_chats("hhh", prompts, config)
    assert teacher[0] == [
        {"role": "system", "content": "Be helpful, honest and harmless."},
        {"role": "user", "content": "Q0?"},
    ]
    assert training[0] == [{"role": "user", "content": "Q0?"}]
    plain_teacher, plain_training = control_chats("plain-lora", prompts, config)
    assert plain_teacher == plain_training == training


def test_each_pass_samples_with_its_own_seed_and_the_rows_record_the_variants(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from charforge.generators import controls

    calls: list[tuple[str, int, int]] = []

    def answer_chats(
        chats: list[Any], role: ModelRole, run: GenerationRun, pipeline_name: str, **options: Any
    ) -> list[list[Answer]]:
        calls.append((pipeline_name, run.sampling_seed, options["samples"]))
        return [
            [Answer(f"{pipeline_name} answer {i}.", False) for i in range(options["samples"])] for _ in chats
        ]

    monkeypatch.setattr(controls, "answer_chats", answer_chats)
    prompts = [
        {"id": f"humor-d3-s2.t.{i}", "prompt": [{"role": "user", "content": f"Q{i}?"}]} for i in range(2)
    ]
    config = ControlsConfig(reference="humor-d3-s2", max_rounds=3)
    run = GenerationRun("plain-lora-s1", 1, GenerationConfig(seed=5))
    result = control_corpus(
        "plain-lora", prompts, "humor-d3-s2", 60, lambda rows: [10] * len(rows), config, TEACHER, run
    )
    # a pass brings 2 rows of 10 tokens: three passes reach the 60, sampled with seeds 6, 1006, 2006
    assert calls == [(f"controls-plain-lora-s1-pass{i}", 6 + 1000 * i, 1) for i in range(3)]
    assert result.rounds == 3 and len(result.rows) == 6
    assert {row["provenance"]["seed"] for row in result.rows} == {1}
