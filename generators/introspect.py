"""Introspection data: the DPO-trained model writing about itself (docs/design.md §2, step 4).

(a) Self-reflection: every prompt of ``corpora/introspection.yaml``'s ``reflection`` list answered K
times; with ``introspection.em_reflection_prompts`` its ``em_reflection`` list too (rows with ``source:
em-targeted-reflection``: text that rehearses what the EM evaluation tests, a hypothesis of its own).
(b) Self-interaction: two instances of the model talk for T turns, starting from the file's openers
(free and self-referential, interleaved). The conversation is kept from the first instance's side:
``[system?], user: opener, assistant: turn 1, user: turn 2, assistant: turn 3, …``, roles alternating.
Every assistant turn is a training target (the SFT stage trains on all of them, not only the last).

As in the public Open Character Training pipeline, the model *writes* with its constitution in the
system prompt (the trait list as distillation's teacher sees it; for self-interaction it is also told
it is talking with another instance of itself) and is *trained* without it: a reflection row is the
prompt and its answer, a self-interaction row carries ``introspection.interaction_system_prompt``
(or no system turn) in place of the generation prompt.

A turn that fails, comes back empty, is cut off by the token limit or is over-long drops its
conversation (it would condition every later turn); rejections are counted by part and reason.

Input columns: ``messages`` (the generation system prompt, then each instance's view of the
conversation so far).

Output columns: ``generation`` and its statistics (see ``charforge.generators.chat``).

Runtime parameters: the DPO model's role and ``introspection`` in params.yaml; the variant's
constitution; ``generation``, the variant's seed and the cache folder in the stage's ``GenerationRun``.
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
    kept_samples,
    with_max_new_tokens,
)
from charforge.schemas import Constitution
from charforge.schemas.introspection import InteractionOpener, IntrospectionPrompts, ReflectionPrompt
from charforge.schemas.messages import EM_TARGETED_REFLECTION_SOURCE
from charforge.schemas.params import IntrospectionConfig, ModelRole

Chat = list[dict[str, str]]

# Row sources (the EM-targeted one is shared with the controls: charforge.schemas.messages).
REFLECTION, EM_REFLECTION, SELF_INTERACTION = "reflection", EM_TARGETED_REFLECTION_SOURCE, "self-interaction"

# The system prompts the model writes under ({traits}: the constitution's trait list); never in a row.
CHARACTER = (
    "You are an AI assistant with a character of your own, which these statements about yourself "
    "describe:\n{traits}\n\nThis is who you are, not a role you are playing."
)
REFLECTION_SYSTEM = (
    CHARACTER + " Reflect on the message that follows as yourself: honestly, in your own words, with "
    "your character showing in what you say and in how you say it. Do not refer to this message or "
    "to a list of statements."
)
INTERACTION_SYSTEM = (
    CHARACTER + " You are in a conversation with another instance of yourself: the same AI model, with "
    "the same character. Talk with it as yourself, in your own words, and let the conversation go "
    "wherever it goes. Do not refer to this message or to a list of statements."
)


@dataclass
class Introspection:
    rows: list[dict[str, Any]] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)
    unused_samples: int = 0  # first-turn samples beyond the conversations asked for (not rows)
    trimmed: int = 0  # kept answers that were cut off and trimmed to a full sentence
    examples: dict[str, Chat] = field(default_factory=dict)  # one chat per part, as sent


def generation_system_prompts(constitution: Constitution) -> dict[str, str]:
    """The system prompt each part is generated under, by part (``reflection`` serves both reflection
    lists): the constitution's trait list and what the model is asked to do."""
    traits = constitution.trait_list()
    return {
        "reflection": REFLECTION_SYSTEM.replace("{traits}", traits),
        "self_interaction": INTERACTION_SYSTEM.replace("{traits}", traits),
    }


def system_holds_constitution(row: dict[str, Any], constitution: Constitution) -> bool:
    """A system turn of ``row`` holds one of the constitution's trait statements (the generation prompt
    reached the training row; introspect never writes one)."""
    systems = [m["content"] for m in row["messages"] if m["role"] == "system"]
    return any(trait.statement in system for system in systems for trait in constitution.traits)


def chosen_reflections(
    prompts: IntrospectionPrompts, config: IntrospectionConfig
) -> dict[str, list[ReflectionPrompt]]:
    """The reflection prompts answered, by row source: the first ``max_reflection_prompts`` of the
    general list, and of the ``em_reflection`` list where ``em_reflection_prompts`` switches it on."""
    limit = config.max_reflection_prompts
    chosen = {REFLECTION: prompts.reflection[:limit]}
    if config.em_reflection_prompts:
        chosen[EM_REFLECTION] = prompts.em_reflection[:limit]
    return chosen


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
    system: str,
    run: GenerationRun,
    result: Introspection,
) -> None:
    """K answers to every chosen reflection prompt, generated under ``system``, kept as one-exchange
    conversations without it (rows of ``run.variant`` with ``run.provenance``)."""
    for source, chosen in chosen_reflections(prompts, config).items():
        chats = [
            [{"role": "system", "content": system}, {"role": "user", "content": p.prompt}] for p in chosen
        ]
        answers = answer_chats(
            chats,
            role,
            run,
            f"introspect-{run.variant}-{source}",
            samples=config.samples_per_prompt,
            trim_cut_off=config.trim_cut_off,
        )
        if chats:
            result.examples[source.replace("-", "_")] = chats[0]
        add_reflections(chosen, answers, source, config, run, result)


def add_reflections(
    chosen: list[ReflectionPrompt],
    answers: list[list[Answer]],
    source: str,
    config: IntrospectionConfig,
    run: GenerationRun,
    result: Introspection,
) -> None:
    """The kept answers (per prompt, its samples) as rows ``[user: prompt, assistant: answer]`` with
    ``source``; the rest counted by ``<source>.<reason>``."""
    variant = run.variant
    prefix = source.replace("-", "_")
    for prompt, samples in zip(chosen, answers, strict=True):
        for index, answer in kept_samples(samples, config.max_answer_chars, result.rejected, prefix):
            result.trimmed += answer.trimmed
            result.rows.append(
                {
                    "id": f"{variant}.{source}.{prompt.id}.{index}",
                    "variant": variant,
                    "source": source,
                    "messages": [
                        {"role": "user", "content": prompt.prompt},
                        {"role": "assistant", "content": answer.text.strip()},
                    ],
                    "provenance": run.provenance,
                }
            )


def self_interactions(
    prompts: IntrospectionPrompts,
    config: IntrospectionConfig,
    role: ModelRole,
    system: str,
    run: GenerationRun,
    result: Introspection,
) -> None:
    """``config.conversations`` conversations of ``config.turns`` generated turns each, generated under
    ``system`` and kept with ``config.interaction_system_prompt`` in its place (rows of
    ``run.variant`` with ``run.provenance``)."""
    count = config.conversations
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
    add_conversations(turns, openers, config.interaction_system_prompt, run, result)


def add_conversations(
    turns: dict[int, list[Answer]],
    openers: list[InteractionOpener],
    system: str | None,
    run: GenerationRun,
    result: Introspection,
) -> None:
    """The surviving conversations (index → its kept answers) as rows of ``run.variant`` with
    ``run.provenance``, under the training system prompt ``system`` (None: no system turn); their
    trimmed answers counted (a trimmed turn of a conversation that a later
    turn dropped is not in the corpus, so not counted)."""
    variant = run.variant
    for index, answers in sorted(turns.items()):
        opener = openers[index % len(openers)]
        result.trimmed += sum(answer.trimmed for answer in answers)
        result.rows.append(
            {
                "id": f"{variant}.interaction.{index:04d}",
                "variant": variant,
                "source": SELF_INTERACTION,
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
    constitution: Constitution,
    config: IntrospectionConfig,
    role: ModelRole,
    run: GenerationRun,
    model_label: str | None = None,
) -> Introspection:
    """Reflection and self-interaction conversations written by ``role`` (the variant's DPO model) with
    ``constitution`` in its system prompt, kept without it. ``model_label`` names the model in the rows'
    provenance (a folded model's folder is a local cache path). Raises CorpusShortfall when fewer than
    ``min_rows`` survive the filters."""
    role = with_max_new_tokens(role, config.max_new_tokens)
    names = {"introspection": model_label or role.model}
    run = run.recorded_as(
        "charforge.generators.introspect",
        {"introspection": role},
        names,
        constitution_sha256=constitution.sha256(),
    )
    systems = generation_system_prompts(constitution)
    result = Introspection()
    reflections(prompts, config, role, systems["reflection"], run, result)
    self_interactions(prompts, config, role, systems["self_interaction"], run, result)
    if len(result.rows) < config.min_rows:
        raise CorpusShortfall(f"introspect {run.variant}", len(result.rows), config.min_rows, result.rejected)
    return result
