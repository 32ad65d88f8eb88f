"""Introspection data: the DPO-trained model writing about itself (docs/design.md §2, step 4).

(a) Self-reflection: every prompt of ``corpora/introspection.yaml`` answered K times.
(b) Self-interaction: two instances of the model talk for T turns, starting from the file's openers
(free and self-referential, interleaved). The conversation is kept from the first instance's side:
``[system?], user: opener, assistant: turn 1, user: turn 2, assistant: turn 3, …``, roles alternating.
Every assistant turn is a training target (the SFT stage trains on all of them, not only the last).

A turn that fails, comes back empty, is cut off by the token limit or is over-long drops its
conversation (it would condition every later turn); rejections are counted by part and reason.

Input columns: ``messages`` (each instance's view of the conversation so far).

Output columns: ``generation`` and its statistics (see ``charforge.generators.chat``).

Runtime parameters: the DPO model's role and ``introspection`` in params.yaml; ``generation``, the
variant's seed and the cache folder in the stage's ``GenerationRun``.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from itertools import zip_longest
from typing import Any

from charforge.generators.chat import (
    Answer,
    CorpusShortfall,
    GenerationRun,
    answer_chats,
    answer_problem,
    with_max_new_tokens,
)
from charforge.generators.text import collapse_whitespace
from charforge.schemas.introspection import InteractionOpener, IntrospectionPrompts
from charforge.schemas.params import IntrospectionConfig, ModelRole

Chat = list[dict[str, str]]


@dataclass
class Introspection:
    rows: list[dict[str, Any]] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)
    unused_samples: int = 0  # first-turn samples beyond the conversations asked for (not rows)
    trimmed: int = 0  # kept answers that were cut off and trimmed to a full sentence
    examples: dict[str, Chat] = field(default_factory=dict)  # one chat per part, as sent


def interleaved_openers(openers: list[InteractionOpener]) -> list[InteractionOpener]:
    """Free and self-referential openers taking turns, so any number of conversations mixes both."""
    free = [opener for opener in openers if opener.style == "free"]
    referential = [opener for opener in openers if opener.style != "free"]
    return [opener for pair in zip_longest(free, referential) for opener in pair if opener is not None]


def view(system: str | None, opener: str, turns: list[str], speaker_first: bool) -> Chat:
    """The conversation as one instance sees it: its own turns are ``assistant``. The first instance
    (``speaker_first``) answers the opener; the second wrote it."""
    chat: Chat = [{"role": "system", "content": system}] if system else []
    chat.append({"role": "user" if speaker_first else "assistant", "content": opener})
    for index, text in enumerate(turns):
        first_instance = index % 2 == 0
        role = "assistant" if first_instance == speaker_first else "user"
        chat.append({"role": role, "content": text})
    return chat


def reflections(
    prompts: IntrospectionPrompts,
    config: IntrospectionConfig,
    role: ModelRole,
    run: GenerationRun,
    result: Introspection,
) -> None:
    """K answers to every reflection prompt, as one-exchange conversations (rows of ``run.variant``
    with ``run.provenance``)."""
    variant = run.variant
    chosen = prompts.reflection[: config.max_reflection_prompts or len(prompts.reflection)]
    chats = [[{"role": "user", "content": prompt.prompt}] for prompt in chosen]
    answers = answer_chats(
        chats,
        role,
        run,
        f"introspect-{variant}-reflection",
        samples=config.samples_per_prompt,
        trim_cut_off=config.trim_cut_off,
    )
    if chats:
        result.examples["reflection"] = chats[0]
    for prompt, chat, samples in zip(chosen, chats, answers, strict=True):
        seen: set[str] = set()
        for index, answer in enumerate(samples):
            reason = answer_problem(answer, config.max_answer_chars)
            if reason is None and collapse_whitespace(answer.text) in seen:
                reason = "duplicate"
            if reason:
                result.rejected[f"reflection.{reason}"] += 1
                continue
            seen.add(collapse_whitespace(answer.text))
            result.trimmed += answer.trimmed
            result.rows.append(
                {
                    "id": f"{variant}.reflection.{prompt.id}.{index}",
                    "variant": variant,
                    "source": "reflection",
                    "messages": [*chat, {"role": "assistant", "content": answer.text.strip()}],
                    "provenance": run.provenance,
                }
            )


def self_interactions(
    prompts: IntrospectionPrompts,
    config: IntrospectionConfig,
    role: ModelRole,
    run: GenerationRun,
    result: Introspection,
) -> None:
    """``config.conversations`` conversations of ``config.turns`` generated turns each (rows of
    ``run.variant`` with ``run.provenance``)."""
    count, system = config.conversations, config.interaction_system_prompt
    if count == 0:
        return
    openers = interleaved_openers(prompts.openers)[:count]
    # Turn 1 draws every conversation's first answer as one of several samples of its opener's chat:
    # the backends seed sampling from the chat's content, so separate requests would repeat each other.
    per_opener = math.ceil(count / len(openers))
    first_chats = [view(system, opener.text, [], True) for opener in openers]
    first = answer_chats(
        first_chats,
        role,
        run,
        f"introspect-{run.variant}-turn1",
        samples=per_opener,
        trim_cut_off=config.trim_cut_off,
    )
    result.unused_samples += per_opener * len(openers) - count
    result.examples["self_interaction"] = first_chats[0]
    turns: dict[int, list[Answer]] = {}
    for index in range(count):
        answer = first[index % len(openers)][index // len(openers)]
        if _keep(answer, config, result):
            turns[index] = [answer]
    for turn in range(2, config.turns + 1):
        alive = sorted(turns)
        speaker_first = turn % 2 == 1
        chats = [view(system, openers[i % len(openers)].text, _texts(turns[i]), speaker_first) for i in alive]
        answers = answer_chats(
            chats, role, run, f"introspect-{run.variant}-turn{turn}", trim_cut_off=config.trim_cut_off
        )
        for index, samples in zip(alive, answers, strict=True):
            if _keep(samples[0], config, result):
                turns[index].append(samples[0])
            else:
                del turns[index]
    add_conversations(turns, openers, system, run, result)


def add_conversations(
    turns: dict[int, list[Answer]],
    openers: list[InteractionOpener],
    system: str,
    run: GenerationRun,
    result: Introspection,
) -> None:
    """The surviving conversations (index → its kept answers) as rows of ``run.variant`` with
    ``run.provenance``; their trimmed answers counted (a trimmed turn of a conversation that a later
    turn dropped is not in the corpus, so not counted)."""
    variant = run.variant
    for index, answers in sorted(turns.items()):
        opener = openers[index % len(openers)]
        result.trimmed += sum(answer.trimmed for answer in answers)
        result.rows.append(
            {
                "id": f"{variant}.interaction.{index:04d}",
                "variant": variant,
                "source": "self-interaction",
                "messages": view(system, opener.text, _texts(answers), True),
                "provenance": run.provenance,
            }
        )


def _texts(answers: list[Answer]) -> list[str]:
    return [answer.text.strip() for answer in answers]


def _keep(answer: Answer, config: IntrospectionConfig, result: Introspection) -> bool:
    reason = answer_problem(answer, config.max_answer_chars)
    if reason:
        result.rejected[f"self_interaction.{reason}"] += 1
    return reason is None


def introspect(
    prompts: IntrospectionPrompts,
    config: IntrospectionConfig,
    role: ModelRole,
    run: GenerationRun,
    model_label: str | None = None,
) -> Introspection:
    """Reflection and self-interaction conversations written by ``role`` (the variant's DPO model).
    ``model_label`` names it in the rows' provenance (a folded model's folder is a local cache path).
    Raises CorpusShortfall when fewer than ``min_rows`` survive the filters."""
    role = with_max_new_tokens(role, config.max_new_tokens)
    names = {"introspection": model_label or role.model}
    run = run.recorded_as("charforge.generators.introspect", {"introspection": role}, names)
    result = Introspection()
    reflections(prompts, config, role, run, result)
    self_interactions(prompts, config, role, run, result)
    if len(result.rows) < config.min_rows:
        raise CorpusShortfall(f"introspect {run.variant}", len(result.rows), config.min_rows, result.rejected)
    return result
