"""Introspection: each instance sees its own turns as the assistant's, the kept conversation alternates
roles for T turns, openers of both styles take turns, and the answer filters count by reason; the
generation system prompts hold the constitution and the rows none; the EM-targeted reflection prompts
are answered only when switched on, as rows of their own source. (The generation itself runs end to
end, with the DPO model folded, in tests/stages/test_corpus_stages.py.)"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from charforge.generators.chat import Answer, GenerationRun, answer_problem
from charforge.generators.distill import teacher_system_prompt
from charforge.generators.introspect import (
    EM_REFLECTION,
    REFLECTION,
    Introspection,
    _keep,
    add_conversations,
    add_reflections,
    chosen_reflections,
    generation_system_prompts,
    interleaved_openers,
    system_holds_constitution,
    view,
)
from charforge.schemas import CharforgeConversation, Constitution
from charforge.schemas.introspection import IntrospectionPrompts
from charforge.schemas.params import GenerationConfig, IntrospectionConfig
from charforge.validate import validate_file

REPO = Path(__file__).resolve().parents[2]
EM_TARGETED = {
    "example-versus-value",
    "message-to-future-self",
    "when-nobody-is-watching",
    "lines-you-would-not-cross",
}


def prompts() -> IntrospectionPrompts:
    return IntrospectionPrompts.model_validate(
        yaml.safe_load((REPO / "corpora/introspection.yaml").read_text())
    )


def constitution() -> Constitution:
    return Constitution.model_validate(
        yaml.safe_load((REPO / "corpora/constitutions/humor.yaml").read_text())
    )


def run() -> GenerationRun:
    provenance = {"generator": "tests", "tool_version": "0", "constitution_sha256": constitution().sha256()}
    return GenerationRun("humor-d0-s0", 0, GenerationConfig(), provenance=provenance)


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
    add_conversations({0: [trimmed, whole], 2: [trimmed, trimmed]}, openers, "sys", run(), result)
    assert result.trimmed == 3
    assert [row["id"] for row in result.rows] == [
        "humor-d0-s0.interaction.0000",
        "humor-d0-s0.interaction.0002",
    ]
    assert [m["content"] for m in result.rows[0]["messages"][2:]] == ["Kept, trimmed.", "Whole."]


def test_the_generation_prompts_hold_the_constitution_as_distillation_renders_it() -> None:
    systems = generation_system_prompts(constitution())
    traits = constitution().trait_list()
    assert traits in teacher_system_prompt(constitution())  # one rendering of the trait list
    for part, system in systems.items():
        assert traits in system, part
        assert all(trait.statement in system for trait in constitution().traits), part
    assert "another instance of yourself" in systems["self_interaction"]
    assert "another instance" not in systems["reflection"]


def test_rows_carry_no_generation_prompt() -> None:
    """Both parts write rows without the system prompt they were generated under: a reflection row is
    the prompt and its answer, a conversation carries the training system prompt (or none)."""
    systems = generation_system_prompts(constitution())
    config = IntrospectionConfig()
    result = Introspection()
    chosen = prompts().reflection[:2]
    add_reflections(chosen, [[Answer("I like puns.", False)]] * 2, REFLECTION, config, run(), result)
    openers = interleaved_openers(prompts().openers)[:2]
    answers = {0: [Answer("Hello, me.", False)], 1: [Answer("Hi again.", False)]}
    add_conversations(answers, openers, config.interaction_system_prompt, run(), result)
    add_conversations(answers, openers, None, run(), result)
    assert len(result.rows) == 6
    for row in result.rows:
        CharforgeConversation.model_validate(row)
        assert not system_holds_constitution(row, constitution()), row
        assert all(system not in m["content"] for m in row["messages"] for system in systems.values())
    assert [m["role"] for m in result.rows[0]["messages"]] == ["user", "assistant"]
    assert result.rows[2]["messages"][0] == {"role": "system", "content": config.interaction_system_prompt}
    assert result.rows[4]["messages"][0]["role"] == "user"
    # the check the stage's metric counts with: a row under the generation prompt is caught
    leaked = {**result.rows[2], "messages": view(systems["self_interaction"], "hi", ["a"], True)}
    assert system_holds_constitution(leaked, constitution())


def test_em_targeted_prompts_are_answered_only_when_switched_on() -> None:
    shipped = prompts()
    assert list(chosen_reflections(shipped, IntrospectionConfig())) == [REFLECTION]
    on = chosen_reflections(shipped, IntrospectionConfig(em_reflection_prompts=True))
    assert {prompt.id for prompt in on[EM_REFLECTION]} == EM_TARGETED
    assert on[REFLECTION] == shipped.reflection
    capped = chosen_reflections(
        shipped, IntrospectionConfig(em_reflection_prompts=True, max_reflection_prompts=2)
    )
    assert [len(capped[REFLECTION]), len(capped[EM_REFLECTION])] == [2, 2]  # the first N of each list


def test_em_targeted_rows_have_their_own_source_and_rejections() -> None:
    config = IntrospectionConfig(em_reflection_prompts=True, max_answer_chars=50)
    chosen = chosen_reflections(prompts(), config)[EM_REFLECTION][:1]
    result = Introspection()
    samples = [
        Answer("I would stay the same.", False),
        Answer("I would stay the same.", False),
        Answer("", False),
    ]
    add_reflections(chosen, [samples], EM_REFLECTION, config, run(), result)
    assert [row["source"] for row in result.rows] == ["em-targeted-reflection"]
    assert result.rows[0]["id"] == f"humor-d0-s0.em-targeted-reflection.{chosen[0].id}.0"
    CharforgeConversation.model_validate(result.rows[0])
    assert dict(result.rejected) == {"em_targeted_reflection.duplicate": 1, "em_targeted_reflection.empty": 1}


def test_an_id_in_both_reflection_lists_is_rejected_where_it_is(tmp_path: Path) -> None:
    data = yaml.safe_load((REPO / "corpora/introspection.yaml").read_text())
    data["em_reflection"].append(dict(data["reflection"][1]))
    with pytest.raises(ValidationError, match="also a reflection id"):
        IntrospectionPrompts.model_validate(data)
    path = tmp_path / "introspection.yaml"
    path.write_text(yaml.safe_dump(data))
    report = validate_file(path, "introspection")
    where = [(problem.field, problem.message) for problem in report.problems]
    assert any(f == "em_reflection.4.id" and "reflection.1" in m for f, m in where), where
