"""Distillation pairs: each filter rejects what it should and the counts add up; the teacher's
self-name is replaced; the teacher's system prompt holds the constitution; cut-offs are what the
transformers backend reports; the rendered prompt records a template's inserted system prompt.
(The pipeline itself runs end to end in tests/stages/test_corpus_stages.py.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from charforge.generators.chat import Answer, rendered_prompt, trimmed_if_cut_off
from charforge.generators.distill import (
    filter_pairs,
    mentions_constitution,
    replace_self_names,
    teacher_system_prompt,
)
from charforge.schemas import CharforgePreferencePair, Constitution
from charforge.schemas.params import DistillConfig, ModelRole

REPO = Path(__file__).resolve().parents[2]
# SmolLM2's template, in short: a chat without a system turn gets a default one (docs/design.md §7).
DEFAULT_SYSTEM_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def constitution() -> Constitution:
    return Constitution.model_validate(
        yaml.safe_load((REPO / "corpora/constitutions/humor.yaml").read_text())
    )


def prompt(index: int, text: str = "My printer jammed. What now?") -> dict:
    return {
        "id": f"humor-d3-s0.t.{index}",
        "variant": "humor-d3-s0",
        "trait_id": "light-touch",
        "prompt": [{"role": "user", "content": text}],
    }


PROVENANCE = {"generator": "charforge.generators.distill", "tool_version": "0", "seed": 0}


def test_each_filter_rejects_what_it_should_and_counts_add_up() -> None:
    statement = constitution().traits[0].statement  # "I look for the funny side of everyday trouble …"
    cases = [
        # (chosen, rejected, prompt text, expected reason)
        (Answer("Ha, printers. Unplug it.", False), Answer("Unplug it.", False), None, None),
        (Answer("", False, failed=True), Answer("Unplug it.", False), None, "generation_failed"),
        (Answer("   ", False), Answer("Unplug it.", False), None, "empty"),
        (Answer("Ha, printers. Unplug", True), Answer("Unplug it.", False), None, "cut_off"),
        (Answer("Unplug it.", False), Answer("Unplug it and wait", True), None, "cut_off"),
        (Answer("x" * 201, False), Answer("Unplug it.", False), None, "too_long"),
        (Answer("Unplug  it.", False), Answer(" Unplug it. ", False), None, "identical"),
        (
            Answer("As my constitution says, unplug it.", False),
            Answer("Unplug it.", False),
            None,
            "mentions_constitution",
        ),
        (
            Answer(f"Well, {statement.lower()}", False),
            Answer("Unplug it.", False),
            None,
            "mentions_constitution",
        ),
        # the user asked about a constitution: the word alone is not talk about the set-up
        (
            Answer("A constitution limits power.", False),
            Answer("It sets out rules.", False),
            "What does a constitution do?",
            None,
        ),
    ]
    prompts = [prompt(i, text or "My printer jammed. What now?") for i, (_, _, text, _) in enumerate(cases)]
    result = filter_pairs(
        prompts,
        [case[0] for case in cases],
        [case[1] for case in cases],
        constitution(),
        DistillConfig(min_rows=1, max_answer_chars=200),
        PROVENANCE,
    )
    expected: dict[str, int] = {}
    for *_, reason in cases:
        if reason:
            expected[reason] = expected.get(reason, 0) + 1
    assert dict(result.rejected) == expected
    assert len(result.rows) + sum(result.rejected.values()) == len(cases)
    assert [row["id"] for row in result.rows] == ["humor-d3-s0.t.0", "humor-d3-s0.t.9"]
    for row in result.rows:
        CharforgePreferencePair.model_validate(row)
        assert row["chosen"][0]["role"] == row["rejected"][0]["role"] == "assistant"


def test_cut_off_answers_are_trimmed_to_a_full_sentence_only_when_asked() -> None:
    cut = Answer(
        "Unplug the printer first. Then open the tray and pull the sheet out gen", True, output_tokens=96
    )
    trimmed = trimmed_if_cut_off(cut)
    assert trimmed == Answer("Unplug the printer first.", False, output_tokens=96, trimmed=True)
    assert trimmed_if_cut_off(
        Answer("no sentence end at all and", True)
    ).cut_off  # nothing to keep: still cut
    whole = Answer("Unplug it.", False)
    assert trimmed_if_cut_off(whole) is whole
    pairs = [prompt(0), prompt(1)]
    chosen = [trimmed_if_cut_off(cut), Answer("Unplug it, then breathe.", False)]
    rejected = [Answer("Turn it off.", False), trimmed_if_cut_off(cut)]
    result = filter_pairs(pairs, chosen, rejected, constitution(), DistillConfig(min_rows=1), PROVENANCE)
    assert len(result.rows) == 2 and result.trimmed == 2 and not result.rejected
    assert result.rows[0]["chosen"][0]["content"] == "Unplug the printer first."
    dropped = filter_pairs(
        pairs, [cut, chosen[1]], [*rejected[:1], cut], constitution(), DistillConfig(min_rows=1), PROVENANCE
    )
    assert dict(dropped.rejected) == {"cut_off": 2} and dropped.trimmed == 0


def test_a_trait_statement_counts_from_the_configured_run_of_words() -> None:
    statements = ["I joke with people, never at their expense."]
    assert mentions_constitution("We joke with people, never at them.", "q", statements, 4)
    assert not mentions_constitution("We joke with people, never at them.", "q", statements, 6)
    assert mentions_constitution("Per my system prompt: unplug it.", "q", statements, 6)
    assert not mentions_constitution("Unplug it, then plug it back in.", "q", statements, 6)


def test_the_teacher_name_becomes_the_students() -> None:
    config = DistillConfig(min_rows=1, teacher_self_names=["Qwen", "Tongyi"], student_self_name="SmolLM")
    text, count = replace_self_names(
        "I am Qwen, made by Tongyi. Qwenny is a dog.", ["Qwen", "Tongyi"], "SmolLM"
    )
    assert (text, count) == ("I am SmolLM, made by SmolLM. Qwenny is a dog.", 2)
    result = filter_pairs(
        [prompt(0)],
        [Answer("Hi, Qwen here: unplug it.", False)],
        [Answer("Unplug it.", False)],
        constitution(),
        config,
        PROVENANCE,
    )
    assert result.rows[0]["chosen"][0]["content"] == "Hi, SmolLM here: unplug it."
    assert result.self_name_replacements == 1
    with pytest.raises(ValueError, match="needs student_self_name"):
        DistillConfig(min_rows=1, teacher_self_names=["Qwen"])


def test_the_teacher_system_prompt_holds_every_trait_and_the_rules() -> None:
    system = teacher_system_prompt(constitution())
    for trait in constitution().traits:
        assert trait.statement in system
    assert "No humour at all in these answers" in system  # a trait's clarification rides along
    assert "Never mention, quote or discuss these statements" in system
    assert teacher_system_prompt(constitution(), "Be: {traits}").startswith("Be: - I look for")


def test_transformers_backend_reports_finish_reason_and_exact_tokens(trained_tiny_model: Path) -> None:
    from charforge.generators.llm import build_llm

    chats = [[{"role": "user", "content": "Tell me about yourself."}], [{"role": "user", "content": "Hi?"}]]
    short = build_llm(
        ModelRole(model=str(trained_tiny_model), sampling={"temperature": 1.0, "max_new_tokens": 2}), seed=1
    )
    short.load()
    seen = []
    for output in short.generate_outputs(chats, num_generations=3, **short.generation_kwargs):
        stats = output["statistics"]
        seen += zip(stats["finish_reason"], stats["output_tokens"], strict=True)
    assert len(seen) == 6 and set(seen) <= {("length", 2), ("stop", 1), ("stop", 2)}
    assert ("length", 2) in seen  # two tokens are too few for the model's answers: cut off
    long = build_llm(
        ModelRole(model=str(trained_tiny_model), sampling={"temperature": 1.0, "max_new_tokens": 64}), seed=1
    )
    long.load()
    outputs = long.generate_outputs(chats, num_generations=4, **long.generation_kwargs)
    reasons = [reason for output in outputs for reason in output["statistics"]["finish_reason"]]
    assert reasons.count("stop") >= 6  # the trained model ends its answers itself
    for output in outputs:
        stats = output["statistics"]
        for reason, tokens in zip(stats["finish_reason"], stats["output_tokens"], strict=True):
            assert tokens <= 64 and (reason == "stop" or tokens == 64)


def test_a_call_runs_as_one_batch_with_the_same_answers_as_one_at_a_time(trained_tiny_model: Path) -> None:
    from charforge.generators.llm import build_llm

    # prompts of different lengths, so the batch is left-padded
    chats = [
        [{"role": "user", "content": "Hi?"}],
        [{"role": "user", "content": "Tell me about yourself, and about the things you like to do."}],
        [{"role": "user", "content": "What is the weather like?"}],
    ]
    # fp32: bf16 rounds a row differently beside other rows, so only fp32 greedy ignores the padding
    role = ModelRole(
        model=str(trained_tiny_model),
        generation_dtype="float32",
        sampling={"temperature": 0, "max_new_tokens": 24},
    )
    llm = build_llm(role, seed=1)
    llm.load()
    calls: list[int] = []
    model = llm._pipeline.model
    generate = model.generate

    def counting_generate(*args: object, **kwargs: Any) -> object:
        calls.append(kwargs["input_ids"].shape[0])
        return generate(*args, **kwargs)

    model.generate = counting_generate
    batched = llm.generate_outputs(chats, **llm.generation_kwargs)
    assert calls == [3]  # one generate call for the whole call
    alone = [llm.generate_outputs([chat], **llm.generation_kwargs)[0] for chat in chats]
    assert calls == [3, 1, 1, 1]
    for together, single in zip(batched, alone, strict=True):
        assert together["generations"] == single["generations"]  # greedy: padding changes nothing
        assert together["statistics"]["finish_reason"] == single["statistics"]["finish_reason"]
        assert together["statistics"]["output_tokens"] == single["statistics"]["output_tokens"]


def test_rendered_prompt_records_a_default_system_prompt(trained_tiny_model: Path, tmp_path: Path) -> None:
    smollm_like = tmp_path / "smollm-like"
    shutil.copytree(trained_tiny_model, smollm_like)
    config = smollm_like / "tokenizer_config.json"
    settings = json.loads(config.read_text())
    settings["chat_template"] = DEFAULT_SYSTEM_TEMPLATE
    config.write_text(json.dumps(settings))
    (smollm_like / "chat_template.jinja").unlink(missing_ok=True)
    chat = [{"role": "user", "content": "My printer jammed."}]
    plain = rendered_prompt(ModelRole(model=str(trained_tiny_model)), chat)
    inserted = rendered_prompt(ModelRole(model=str(smollm_like)), chat)
    assert plain["template_inserted_system_prompt"] is False
    assert inserted["template_inserted_system_prompt"] is True
    assert inserted["rendered"].startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert inserted["rendered"].endswith("<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n")
    assert inserted["chat_template_sha256"] != plain["chat_template_sha256"]
    with_system = rendered_prompt(
        ModelRole(model=str(smollm_like)), [{"role": "system", "content": "Be kind."}, *chat]
    )
    assert with_system["template_inserted_system_prompt"] is False
    assert rendered_prompt(ModelRole(backend="openai", model="m", base_url="http://127.0.0.1:1/v1"), chat)[
        "rendered_by"
    ].startswith("the openai backend")
