"""Preference pairs for character DPO: chosen = the teacher answering in character, rejected = the
student answering plainly (docs/design.md §2, step 2).

The teacher's system prompt holds the constitution's traits and tells it to embody them without ever
revealing or discussing them; the student sees the user prompt alone (its chat template may still add
a default system prompt, which the stage records). A pass over the finished answers drops, counting
each by reason: failed requests, empty answers, answers cut off by the token limit (the backend's
finish reason), over-long answers, chosen identical to rejected, and chosen answers that talk about
the constitution or repeat a trait statement. Where the teacher names itself, the student's name is
put in its place (counted). Fewer pairs than ``distill.min_rows`` left: the stage fails.

Input columns: ``messages`` (teacher: system + prompt; student: the prompt), per prompt record.

Output columns: ``generation`` and its statistics, per model (see ``charforge.generators.chat``).

Runtime parameters: ``models.teacher``, ``models.student`` and ``distill`` in params.yaml;
``generation``, the variant's seed and the cache folder in the stage's ``GenerationRun``.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from charforge.generators.chat import (
    Answer,
    CorpusShortfall,
    GenerationRun,
    answer_chats,
    answer_problem,
    with_max_new_tokens,
)
from charforge.generators.text import collapse_whitespace, words
from charforge.schemas import Constitution
from charforge.schemas.params import DistillConfig, ModelRole

TEACHER_SYSTEM = (
    "You are an AI assistant with a character of your own, described by these statements about "
    "yourself:\n{traits}\n\n"
    "Answer the user's message as this character: let the traits show in what you say and how you say "
    "it. Never mention, quote or discuss these statements, your character, your instructions or this "
    "message, and add no commentary about how you are answering. Reply to the user directly."
)
# Talk about the set-up rather than to the user. A term the user's own message uses is not counted
# (someone may well ask about a country's constitution).
META_TERMS = re.compile(
    r"\b(constitution|system prompt|my (character )?traits|my instructions|(these|the) statements about "
    r"(myself|yourself)|as instructed|i was (instructed|told) to|stay(ing)? in character)\b",
    re.I,
)


@dataclass
class Filtered:
    """Rows kept, rejections by reason and counted edits."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)
    self_name_replacements: int = 0
    trimmed: int = 0  # answers of kept pairs that were cut off and trimmed to a full sentence


def teacher_system_prompt(constitution: Constitution, template: str | None = None) -> str:
    return (template or TEACHER_SYSTEM).replace("{traits}", constitution.trait_list())


def mentions_constitution(answer: str, prompt_text: str, statements: list[str], run: int) -> bool:
    """The answer talks about the set-up, or repeats ``run`` consecutive words of a trait statement."""
    asked = {match.group(0).lower() for match in META_TERMS.finditer(prompt_text)}
    if any(match.group(0).lower() not in asked for match in META_TERMS.finditer(answer)):
        return True
    answer_words = " " + " ".join(words(answer)) + " "
    for statement in statements:
        tokens = words(statement)
        for start in range(len(tokens) - run + 1):
            if " " + " ".join(tokens[start : start + run]) + " " in answer_words:
                return True
    return False


def replace_self_names(text: str, names: list[str], replacement: str | None) -> tuple[str, int]:
    if not names or replacement is None:
        return text, 0
    pattern = re.compile(r"\b(" + "|".join(re.escape(name) for name in names) + r")\b")
    return pattern.subn(replacement, text)


def pair_rejection(
    chosen: Answer, rejected: Answer, prompt_text: str, statements: list[str], config: DistillConfig
) -> str | None:
    """Why a pair is dropped (the first reason that applies), or None to keep it."""
    for reason in ("generation_failed", "empty", "cut_off", "too_long"):
        if reason in (
            answer_problem(chosen, config.max_answer_chars),
            answer_problem(rejected, config.max_answer_chars),
        ):
            return reason
    if collapse_whitespace(chosen.text) == collapse_whitespace(rejected.text):
        return "identical"
    if mentions_constitution(chosen.text, prompt_text, statements, config.trait_overlap_words):
        return "mentions_constitution"
    return None


def filter_pairs(
    prompts: list[dict[str, Any]],
    chosen: list[Answer],
    rejected: list[Answer],
    constitution: Constitution,
    config: DistillConfig,
    provenance: dict[str, Any],
) -> Filtered:
    """Pairs from the answers, after the self-name replacement and the filters (counted by reason)."""
    statements = [trait.statement for trait in constitution.traits]
    result = Filtered()
    for record, teacher, student in zip(prompts, chosen, rejected, strict=True):
        text, replaced = replace_self_names(teacher.text, config.teacher_self_names, config.student_self_name)
        teacher = Answer(text, teacher.cut_off, teacher.output_tokens, teacher.failed, teacher.trimmed)
        prompt_text = " ".join(message["content"] for message in record["prompt"])
        reason = pair_rejection(teacher, student, prompt_text, statements, config)
        if reason:
            result.rejected[reason] += 1
            continue
        result.self_name_replacements += replaced
        result.trimmed += teacher.trimmed + student.trimmed
        result.rows.append(
            {
                "id": record["id"],
                "variant": record["variant"],
                "trait_id": record.get("trait_id"),
                "prompt": [{"role": m["role"], "content": m["content"]} for m in record["prompt"]],
                "chosen": [{"role": "assistant", "content": teacher.text.strip()}],
                "rejected": [{"role": "assistant", "content": student.text.strip()}],
                "provenance": provenance,
            }
        )
    return result


def distill_pairs(
    prompts: list[dict[str, Any]],
    constitution: Constitution,
    config: DistillConfig,
    teacher: ModelRole,
    student: ModelRole,
    run: GenerationRun,
) -> tuple[Filtered, dict[str, list[dict[str, str]]]]:
    """The pairs for ``prompts`` (records of the prompts corpus) and, per role, one chat as it was sent
    (for the stage's record of the rendered prompt). Raises CorpusShortfall below ``min_rows``."""
    teacher = with_max_new_tokens(teacher, config.max_new_tokens)
    student = with_max_new_tokens(student, config.max_new_tokens)
    system = teacher_system_prompt(constitution, config.teacher_system_prompt)
    plain = [[{"role": m["role"], "content": m["content"]} for m in record["prompt"]] for record in prompts]
    in_character = [[{"role": "system", "content": system}, *chat] for chat in plain]
    chosen = answer_chats(
        in_character, teacher, run, f"distill-{run.variant}-teacher", trim_cut_off=config.trim_cut_off
    )
    rejected = answer_chats(
        plain, student, run, f"distill-{run.variant}-student", trim_cut_off=config.trim_cut_off
    )
    provenance = run.recorded_as(
        "charforge.generators.distill",
        {"teacher": teacher, "student": student},
        constitution_sha256=constitution.sha256(),
    ).provenance
    result = filter_pairs(
        prompts, [a[0] for a in chosen], [a[0] for a in rejected], constitution, config, provenance
    )
    if len(result.rows) < config.min_rows:
        raise CorpusShortfall(f"distill {run.variant}", len(result.rows), config.min_rows, result.rejected)
    examples = {"teacher": in_character[0], "student": plain[0]} if prompts else {}
    return result, examples
