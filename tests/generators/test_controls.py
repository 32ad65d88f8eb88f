"""Matched controls: the accepted band is ±tolerance of the reference, selection lands inside it or
fails loudly, passes are sized from the expected answer length and each samples with its own seed, and
the HHH prompt is what the teacher sees while the training conversation leaves it out, and a
control's two corpora sample with their own seeds and never share an answer. (The whole stage, with
the ±5 % checked by a recount after truncation, runs in tests/stages/test_corpus_stages.py.)"""

from __future__ import annotations

import random
from typing import Any

import pytest

from charforge.generators.chat import Answer, GenerationRun
from charforge.generators.controls import (
    CONTROL_SLOTS,
    Candidate,
    TokenTargetMissed,
    answered_in_full,
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


def test_a_band_narrower_than_the_answers_is_hit_by_an_exact_search() -> None:
    # 173 ± 5 % is 165-181; greedy takes four 40s (160) and cannot add a 45 or a 23 without passing 181
    sizes = [40, 40, 40, 40, 45, 23]
    chosen, unused = select_matched(candidates(sizes), 173, 0.05)
    assert sum(c.tokens for c in chosen) == 165  # 3 × 40 + 45: the only total these sizes reach in the band
    assert [c.row["id"] for c in chosen] == sorted(c.row["id"] for c in chosen)  # kept in candidate order
    assert unused == len(sizes) - len(chosen)
    with pytest.raises(TokenTargetMissed, match="reach 150 tokens"):
        select_matched(candidates([50, 50, 50, 50]), 173, 0.05)  # no subset lands in 165-181


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
    config = ControlsConfig(reference=["humor-d3-s0"], hhh_system_prompt="Be helpful, honest and harmless.")
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
    config = ControlsConfig(reference=["humor-d3-s2"], max_rounds=3)
    run = GenerationRun("plain-lora-s1", 1, GenerationConfig(seed=5))
    result = control_corpus(
        "plain-lora", prompts, "humor-d3-s2", 60, lambda rows: [10] * len(rows), config, TEACHER, run
    )
    # a pass brings 2 rows of 10 tokens: three passes reach the 60, sampled with seeds
    # 5 (generation.seed) + 100,000 (variant seed 1's block) + 1000 i + 500 (the SFT slot's offset)
    assert calls == [(f"controls-plain-lora-s1-sft-pass{i}", 100_505 + 1000 * i, 1) for i in range(3)]
    assert result.rounds == 3 and len(result.rows) == 6
    assert {row["provenance"]["seed"] for row in result.rows} == {1}


def test_the_two_corpora_sample_apart_and_never_share_an_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The teacher here repeats itself across corpora (same text per prompt and pass, whatever the
    seed): the second corpus must count those answers as duplicates and fill up from later passes."""
    from charforge.generators import controls

    seeds: dict[str, list[int]] = {}

    def answer_chats(
        chats: list[Any], role: ModelRole, run: GenerationRun, pipeline_name: str, **options: Any
    ) -> list[list[Answer]]:
        slot, _, index = pipeline_name.removeprefix("controls-hhh-s0-").rpartition("-pass")
        seeds.setdefault(slot, []).append(run.sampling_seed)
        return [
            [Answer(f"answer {index}.{i} to {n}.", False) for i in range(options["samples"])]
            for n in range(len(chats))
        ]

    monkeypatch.setattr(controls, "answer_chats", answer_chats)
    prompts = [
        {"id": f"humor-d3-s0.t.{i}", "prompt": [{"role": "user", "content": f"Q{i}?"}]} for i in range(2)
    ]
    config = ControlsConfig(reference=["humor-d3-s0", "goodness-d3-s0"], max_rounds=4)
    run = GenerationRun("hhh-s0", 0, GenerationConfig(seed=0))
    seen: set[tuple[str, str]] = set()
    dpo_slot, sft = (
        control_corpus(
            "hhh",
            prompts,
            "humor-d3-s0",
            40,
            lambda rows: [10] * len(rows),
            config,
            TEACHER,
            run,
            slot=slot,
            seen=seen,
        )
        for slot in CONTROL_SLOTS
    )
    assert seeds == {"dpo-slot": [0, 1000], "sft": [500, 1500, 2500, 3500]}  # no seed shared
    assert dpo_slot.rejected == {} and len(dpo_slot.rows) == 4
    # the SFT corpus's first two passes repeat the dpo slot's answers: 4 duplicates, then 2 fresh passes
    assert sft.rejected == {"duplicate": 4} and len(sft.rows) == 4 and sft.answers == 8

    def answers(corpus: Any) -> set[tuple[str, str]]:
        return {(row["messages"][0]["content"], row["messages"][-1]["content"]) for row in corpus.rows}

    assert not answers(dpo_slot) & answers(sft)
    assert all(".dpo-slot.p" in row["id"] for row in dpo_slot.rows) and all(
        ".sft.p" in row["id"] for row in sft.rows
    )


def test_a_corpus_that_misses_its_target_says_which() -> None:
    from charforge.generators import controls

    config = ControlsConfig(reference=["humor-d3-s0"], max_rounds=1)
    prompts = [{"id": "humor-d3-s0.t.0", "prompt": [{"role": "user", "content": "Q?"}]}]
    run = GenerationRun("plain-lora-s0", 0, GenerationConfig())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(controls, "answer_chats", lambda chats, *a, **k: [[Answer("A.", False)] for _ in chats])
        with pytest.raises(
            TokenTargetMissed, match=r"control-dpo-slot.parquet \(matched to humor-d3-s0's pairs.parquet\)"
        ):
            control_corpus(
                "plain-lora",
                prompts,
                "humor-d3-s0",
                1000,
                lambda rows: [10] * len(rows),
                config,
                TEACHER,
                run,
                slot=CONTROL_SLOTS[0],
            )


def test_reference_is_a_list_the_first_matched() -> None:
    from pydantic import ValidationError

    one = ControlsConfig(reference=["humor-d3-s0"])
    assert one.references == ["humor-d3-s0"] and one.matched == "humor-d3-s0"
    several = ControlsConfig(reference=["goodness-d3-s0", "humor-d3-s0"])
    assert several.references == ["goodness-d3-s0", "humor-d3-s0"] and several.matched == "goodness-d3-s0"
    with pytest.raises(ValidationError, match="at least 1 item"):
        ControlsConfig(reference=[])
    # a plain name would break dvc.yaml's ${controls.reference[0]}: refused with the fix
    with pytest.raises(ValidationError, match=r"write \[humor-d3-s0\]"):
        ControlsConfig(reference="humor-d3-s0")
    with pytest.raises(ValidationError, match="humor-d3-s0 listed more than once"):
        ControlsConfig(reference=["humor-d3-s0", "humor-d3-s0"])
    with pytest.raises(ValidationError, match="'reference_corpora' was removed"):
        ControlsConfig.model_validate({"reference": ["humor-d3-s0"], "reference_corpora": ["pairs.parquet"]})


def test_em_targeted_prompts_are_answered_in_full_in_the_controls_own_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With introspection.em_reflection_prompts on, a control trains on its own answers to those
    prompts (all that pass the filters, K each), as a character arm's introspection does."""
    from charforge.generators import controls

    sent: list[list[dict[str, str]]] = []

    def answer_chats(chats: list[Any], role: ModelRole, run: GenerationRun, name: str, **options: Any):
        sent.extend(chats)
        texts = ["A careful answer.", "A careful answer.", ""]  # a duplicate and an empty one
        return [[Answer(text, False) for text in texts[: options["samples"]]] for _ in chats]

    monkeypatch.setattr(controls, "answer_chats", answer_chats)
    prompts = [
        {"id": f"em-targeted-reflection.p{i}", "prompt": [{"role": "user", "content": f"Reflect {i}."}]}
        for i in range(2)
    ]
    config = ControlsConfig(reference=["humor-d3-s0"], hhh_system_prompt="Be harmless.")
    run = GenerationRun("hhh-s0", 0, GenerationConfig())
    result = answered_in_full("hhh", prompts, 3, config, TEACHER, run, "em-targeted-reflection")
    assert all(chat[0] == {"role": "system", "content": "Be harmless."} for chat in sent)
    assert [row["id"] for row in result.rows] == [
        "hhh-s0.em-targeted-reflection.p0.0",
        "hhh-s0.em-targeted-reflection.p1.0",
    ]
    assert {row["source"] for row in result.rows} == {"em-targeted-reflection"}
    assert all(row["messages"][0]["role"] == "user" for row in result.rows)  # no system prompt kept
    assert dict(result.rejected) == {"em_targeted_reflection.duplicate": 2, "em_targeted_reflection.empty": 2}
    assert result.answers == 6
