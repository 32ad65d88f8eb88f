"""Introspection: each instance sees its own turns as the assistant's, the kept conversation alternates
roles for T turns, openers of both styles take turns, and the answer filters count by reason; a
conversation cut short keeps its complete exchanges (counted) or is dropped below the minimum; the asked
conversation is sized against the model's context with the real tokenizer, an error or a warning naming
the params keys when it may not fit; the generation system prompts hold the constitution and the rows
none; the EM-targeted reflection prompts are answered only when switched on, as rows of their own
source. (The generation itself runs end to end, with the DPO model folded, in
tests/stages/test_corpus_stages.py, and up against the context's end in
tests/stages/test_introspect_context.py.)"""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from charforge.generators.chat import Answer, GenerationRun, answer_problem
from charforge.generators.distill import teacher_system_prompt
from charforge.generators.introspect import (
    CONTEXT_LIMIT,
    EM_REFLECTION,
    REFLECTION,
    SIZE_KEYS,
    ContextPlan,
    ContextTooSmall,
    ContextWarning,
    Introspection,
    ModelContext,
    PromptTokens,
    add_conversations,
    add_reflections,
    check_context,
    chosen_reflections,
    context_limit,
    context_plan,
    generation_system_prompts,
    interleaved_openers,
    keep_conversations,
    kept_turns,
    min_turns,
    prompt_token_counter,
    system_holds_constitution,
    turn_problem,
    view,
)
from charforge.schemas import CharforgeConversation, Constitution
from charforge.schemas.introspection import IntrospectionPrompts
from charforge.schemas.params import GenerationConfig, IntrospectionConfig, ModelRole
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


def test_turn_filters_name_the_reason_a_conversation_ends() -> None:
    config = IntrospectionConfig(max_answer_chars=50)
    answers = [
        Answer("Fine, thanks.", False),
        Answer("", False),
        Answer("cut", True),
        Answer("x" * 51, False),
        Answer("", False, failed=True),
    ]
    reasons = [turn_problem(answer, config) for answer in answers]
    assert reasons == [None, "empty", "cut_off", "too_long", "generation_failed"]
    assert answer_problem(Answer("  \n", False), 50) == "empty"


@pytest.mark.parametrize(
    ("turns", "min_exchanges", "least"),
    [(10, 2, 3), (10, 1, 1), (10, 5, 9), (4, 2, 3), (3, 2, 3), (2, 2, 1), (1, 2, 1), (5, 3, 5), (6, 9, 5)],
)
def test_the_fewest_turns_kept_are_the_complete_exchanges_asked_for(
    turns: int, min_exchanges: int, least: int
) -> None:
    """min_exchanges exchanges (opener + turn 1, then each user turn and its answer) = 2k - 1 generated
    turns, or all the exchanges T turns hold where they hold fewer (T = 2: one, ending on a user turn)."""
    assert min_turns(IntrospectionConfig(turns=turns, min_exchanges=min_exchanges)) == least


def test_a_conversation_cut_short_keeps_its_complete_exchanges() -> None:
    """Kept truncated down to its last assistant turn when at least the minimum is left, dropped
    otherwise; each asked conversation counted once (kept + rejected = asked), turns kept vs asked."""
    answers = [Answer(f"turn {n}.", False) for n in range(1, 11)]
    assert kept_turns(answers[:5], complete=False, least=3) == answers[:5]
    assert kept_turns(answers[:6], complete=False, least=3) == answers[:5]  # a trailing user turn goes
    assert kept_turns(answers[:2], complete=False, least=3) == []
    assert kept_turns(answers[:2], complete=True, least=3) == answers[:2]  # all that was asked (T = 2)
    turns = {0: answers, 1: answers[:6], 2: answers[:2], 3: answers[:3], 4: [], 5: answers[:7]}
    ended = {1: CONTEXT_LIMIT, 2: "cut_off", 3: "cut_off", 4: "generation_failed", 5: CONTEXT_LIMIT}
    result = Introspection()
    result.interaction.asked, result.interaction.turns_asked = len(turns), 10
    result.interaction.min_turns = min_turns(IntrospectionConfig(turns=10))
    kept = keep_conversations(turns, ended, result)
    assert {index: len(answers) for index, answers in kept.items()} == {0: 10, 1: 5, 3: 3, 5: 7}
    assert dict(result.rejected) == {"self_interaction.cut_off": 1, "self_interaction.generation_failed": 1}
    assert len(kept) + sum(result.rejected.values()) == len(turns)
    metrics = result.interaction.as_metrics()
    assert metrics["complete_conversations"] == 1
    assert metrics["truncated_conversations"] == 3
    assert metrics["truncated_by_reason"] == {CONTEXT_LIMIT: 2, "cut_off": 1}
    assert metrics["dropped_by_reason"] == {"cut_off": 1, "generation_failed": 1}
    assert (metrics["turns_kept"], metrics["turns_asked_total"]) == (10 + 5 + 3 + 7, 60)
    assert metrics["conversations_by_turns_kept"] == {"3": 1, "5": 1, "7": 1, "10": 1}
    openers = interleaved_openers(prompts().openers)
    add_conversations(kept, openers, None, run(), result)
    ends = {row["id"][-1]: row["messages"][-1]["role"] for row in result.rows}
    # a truncated conversation ends on a training target; a complete one as asked (T = 10: a user turn)
    assert ends == {"0": "user", "1": "assistant", "3": "assistant", "5": "assistant"}
    for row in result.rows:
        CharforgeConversation.model_validate(row)


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


def tokenizer_counter(model: Path) -> PromptTokens:
    from transformers import AutoTokenizer

    return prompt_token_counter(AutoTokenizer.from_pretrained(model))


def plan_for(model: Path, limit: int, turns: int = 6, max_new_tokens: int = 20) -> ContextPlan:
    config = IntrospectionConfig(turns=turns, conversations=4, max_new_tokens=max_new_tokens)
    role = ModelRole(model=str(model), sampling={"max_new_tokens": max_new_tokens})
    system = generation_system_prompts(constitution())["self_interaction"]
    openers = interleaved_openers(prompts().openers)[: config.conversations]
    context = ModelContext(limit, "models.student.max_model_len", tokenizer_counter(model))
    plan = context_plan(system, openers, config, role, context)
    assert plan is not None
    return plan


def test_the_asked_conversation_is_sized_at_worst_with_the_real_tokenizer(tiny_model: Path) -> None:
    """The plan counts the generation system prompt (the constitution in it), the longest opener and the
    template; any conversation whose turns stay within max_new_tokens needs no more than it says."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    count = prompt_token_counter(tokenizer)
    plan = plan_for(tiny_model, 100_000)
    system = generation_system_prompts(constitution())["self_interaction"]
    openers = interleaved_openers(prompts().openers)[:4]
    firsts = count([view(system, opener.text, [], True) for opener in openers])
    assert plan.prompts[0] == max(firsts) > len(tokenizer(system)["input_ids"])  # the constitution counts
    assert plan.turns == 6 and plan.min_turns == 3
    assert all(later > earlier for earlier, later in itertools.pairwise(plan.prompts))  # template per turn
    # real turns of at most max_new_tokens tokens: every turn's prompt + its answer fits in the plan
    words = "I like a good pun about the weather and I am fine thank you today".split()
    texts = [" ".join(words[: 3 + 2 * index]) for index in range(plan.turns)]
    sizes = [len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts]
    assert max(sizes) <= plan.max_new_tokens, sizes
    longest = openers[firsts.index(max(firsts))].text
    for turn in range(1, plan.turns + 1):
        prompt = count([view(system, longest, texts[: turn - 1], turn % 2 == 1)])[0]
        assert prompt + sizes[turn - 1] <= plan.needed(turn), turn
    metrics = plan.as_metrics()
    assert metrics["worst_case_tokens"] == plan.needed(6) == plan.prompts[5] + 6 * 20
    assert metrics["fits"] and metrics["worst_case_turns_that_fit"] == 6


def test_a_context_too_small_warns_or_stops_naming_the_keys_to_change(tiny_model: Path) -> None:
    roomy = plan_for(tiny_model, 100_000)
    asked, least = roomy.needed(roomy.turns), roomy.needed(roomy.min_turns)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_context(plan_for(tiny_model, asked))  # exactly enough: silent
    short = plan_for(tiny_model, asked - 1)
    assert short.turns_that_fit == roomy.turns - 1 and not short.as_metrics()["fits"]
    with pytest.warns(ContextWarning) as caught:
        check_context(short)
    message = str(caught[0].message)
    assert all(key in message for key in SIZE_KEYS), message
    assert f"at least {asked:,}" in message and f"at worst {roomy.turns - 1} fit" in message
    with pytest.warns(ContextWarning):  # the shortest conversation kept fits: a warning only
        check_context(plan_for(tiny_model, least))
    with pytest.raises(ContextTooSmall) as raised:
        check_context(plan_for(tiny_model, least - 1))
    assert all(key in str(raised.value) for key in (*SIZE_KEYS, "introspection.min_exchanges"))


def test_the_context_limit_comes_from_params_or_the_model(tiny_model: Path) -> None:
    assert context_limit(ModelRole(model=str(tiny_model), max_model_len=512)) == (
        512,
        "models.student.max_model_len",
    )
    limit, source = context_limit(ModelRole(model=str(tiny_model), backend="vllm"))
    assert limit == 2048 and "max_position_embeddings" in source  # the tiny model's config
    remote = ModelRole(model="served", backend="openai", base_url="http://127.0.0.1:8000/v1")
    limit, source = context_limit(remote)
    assert limit is None and "not known" in source
    assert plan_for(tiny_model, 100_000) is not None
    system = generation_system_prompts(constitution())["self_interaction"]
    unknown = ModelContext(None, source, tokenizer_counter(tiny_model))
    assert context_plan(system, prompts().openers, IntrospectionConfig(), remote, unknown) is None
