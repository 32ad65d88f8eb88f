"""Introspection: each instance sees its own turns as the assistant's, the kept conversation alternates
roles for T turns, openers of both styles take turns, and the answer filters count by reason. (The
generation itself runs end to end, with the DPO model folded, in tests/stages/test_corpus_stages.py.)"""

from __future__ import annotations

import itertools
from pathlib import Path

import yaml

from charforge.generators.chat import Answer, GenerationRun, answer_problem
from charforge.generators.introspect import (
    Introspection,
    _keep,
    add_conversations,
    interleaved_openers,
    view,
)
from charforge.schemas.introspection import IntrospectionPrompts
from charforge.schemas.params import GenerationConfig, IntrospectionConfig

REPO = Path(__file__).resolve().parents[2]


def prompts() -> IntrospectionPrompts:
    return IntrospectionPrompts.model_validate(
        yaml.safe_load((REPO / "corpora/introspection.yaml").read_text())
    )


def test_each_instance_sees_its_own_turns_as_the_assistants() -> None:
    turns = ["a1", "b2", "a3"]
    first = view("sys", "opener", turns, speaker_first=True)
    second = view("sys", "opener", turns[:2], speaker_first=False)
    assert [(m["role"], m["content"]) for m in first] == [
        ("system", "sys"),
        ("user", "opener"),
        ("assistant", "a1"),
        ("user", "b2"),
        ("assistant", "a3"),
    ]
    # the second instance wrote the opener and b2: they are its assistant turns
    assert [(m["role"], m["content"]) for m in second] == [
        ("system", "sys"),
        ("assistant", "opener"),
        ("user", "a1"),
        ("assistant", "b2"),
    ]
    assert view(None, "hi", [], speaker_first=True) == [{"role": "user", "content": "hi"}]


def test_a_conversation_of_t_turns_alternates_from_the_first_instances_side() -> None:
    for turns in range(1, 8):
        texts = [f"t{index}" for index in range(1, turns + 1)]
        roles = [m["role"] for m in view(None, "opener", texts, speaker_first=True)]
        assert roles[0] == "user" and len(roles) == turns + 1
        assert all(a != b for a, b in itertools.pairwise(roles)), roles
        # every turn the model writes is a training target when it is the assistant's
        assert roles[1::2] == ["assistant"] * len(roles[1::2])


def test_openers_of_both_styles_take_turns() -> None:
    ordered = interleaved_openers(prompts().openers)
    assert len(ordered) == len(prompts().openers)
    assert [opener.style for opener in ordered[:4]] == ["free", "self-referential"] * 2


def test_turn_filters_count_by_part_and_reason() -> None:
    config = IntrospectionConfig(max_answer_chars=50)
    result = Introspection()
    answers = [
        Answer("Fine, thanks.", False),
        Answer("", False),
        Answer("cut", True),
        Answer("x" * 51, False),
        Answer("", False, failed=True),
    ]
    kept = [_keep(answer, config, result) for answer in answers]
    assert kept == [True, False, False, False, False]
    assert dict(result.rejected) == {
        "self_interaction.empty": 1,
        "self_interaction.cut_off": 1,
        "self_interaction.too_long": 1,
        "self_interaction.generation_failed": 1,
    }
    assert answer_problem(Answer("  \n", False), 50) == "empty"


def test_trimmed_turns_count_only_in_conversations_that_are_kept() -> None:
    openers = interleaved_openers(prompts().openers)[:2]
    trimmed, whole = Answer("Kept, trimmed.", False, trimmed=True), Answer("Whole.", False)
    result = Introspection()
    # conversation 1 was dropped at a later turn (absent), after a trimmed first turn: not counted
    run = GenerationRun("humor-d0-s0", 0, GenerationConfig())
    add_conversations({0: [trimmed, whole], 2: [trimmed, trimmed]}, openers, "sys", run, result)
    assert result.trimmed == 3
    assert [row["id"] for row in result.rows] == [
        "humor-d0-s0.interaction.0000",
        "humor-d0-s0.interaction.0002",
    ]
    assert [m["content"] for m in result.rows[0]["messages"][2:]] == ["Kept, trimmed.", "Whole."]
