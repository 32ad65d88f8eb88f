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

A turn that fails, comes back empty, is cut off by the token limit or is over-long ends its
conversation (it would condition every later turn), and so does a turn whose prompt plus
``max_new_tokens`` would pass the model's context (it is never sent). The conversation keeps its complete
turns, ending on the first instance's (an assistant) turn, when at least
``introspection.min_exchanges`` complete exchanges remain (fewer where fewer were asked): it is counted
as truncated, by the reason its next turn failed. With fewer it is dropped, counted as rejected
(``self_interaction.<reason>``, one per conversation, so kept + rejected = asked). Before anything is
generated, the asked conversation is sized against the model's context at worst (every turn uses all
``max_new_tokens``): too small for the shortest conversation kept is an error, too small for the turns
asked a warning; both name the params keys to change.

Input columns: ``messages`` (the generation system prompt, then each instance's view of the
conversation so far).

Output columns: ``generation`` and its statistics (see ``charforge.generators.chat``).

Runtime parameters: the DPO model's role and ``introspection`` in params.yaml; the variant's
constitution; ``generation``, the variant's seed and the cache folder in the stage's ``GenerationRun``.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
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
# Prompt tokens of each chat as the model is sent it (chat template and generation prompt included).
PromptTokens = Callable[[Sequence[Chat]], list[int]]

# Row sources (the EM-targeted one is shared with the controls: charforge.schemas.messages).
REFLECTION, EM_REFLECTION, SELF_INTERACTION = "reflection", EM_TARGETED_REFLECTION_SOURCE, "self-interaction"

# Why a conversation ended early: its next prompt + max_new_tokens would not fit the model's context.
CONTEXT_LIMIT = "context_limit"
# The params keys that size a self-interaction conversation against the student's context.
SIZE_KEYS = ("models.student.max_model_len", "introspection.max_new_tokens", "introspection.turns")

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


class ContextTooSmall(ValueError):
    """The model's context cannot hold the shortest self-interaction conversation that would be kept."""


class ContextWarning(UserWarning):
    """The asked self-interaction may not fit the model's context: conversations that reach it are
    kept truncated (counted)."""


@dataclass(frozen=True)
class ModelContext:
    """The context a self-interaction must fit in: ``limit`` tokens (None: not known here, nothing is
    checked), where that figure comes from, and how to count a chat's prompt tokens (None: no tokenizer
    here)."""

    limit: int | None
    source: str
    prompt_tokens: PromptTokens | None = None


def context_limit(role: ModelRole) -> tuple[int | None, str]:
    """The context ``role``'s model runs with, in tokens, and where that figure comes from: its
    ``max_model_len`` where set (vLLM, llama.cpp), else the model's own ``max_position_embeddings``
    (what vLLM and transformers use) where this machine holds the model; None where it cannot be known
    here (a server's model)."""
    if role.max_model_len:
        return role.max_model_len, "models.student.max_model_len"
    if role.backend not in {"transformers", "vllm"}:
        return None, f"not known here (the {role.backend} backend's; models.student.max_model_len is not set)"
    from transformers import AutoConfig

    from charforge.generators.llm import resolve_model

    config = AutoConfig.from_pretrained(resolve_model(role))
    limit = getattr(config.get_text_config(), "max_position_embeddings", None)
    if not limit:
        return None, "not known (no max_position_embeddings; models.student.max_model_len is not set)"
    return int(limit), "the model's max_position_embeddings (models.student.max_model_len is not set)"


def prompt_token_counter(tokenizer: Any) -> PromptTokens:
    """Prompt tokens of chats as the model is sent them: each rendered with ``tokenizer``'s chat template
    and the generation prompt, then tokenised without adding special tokens again."""

    def count(chats: Sequence[Chat]) -> list[int]:
        if not chats:
            return []
        texts = tokenizer.apply_chat_template(list(chats), tokenize=False, add_generation_prompt=True)
        return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]

    return count


@dataclass(frozen=True)
class ContextPlan:
    """What the asked conversation needs at worst, every turn using all ``max_new_tokens``:
    ``prompts[t - 1]`` is turn t's prompt with every earlier turn empty (the generation system prompt
    with the constitution, the longest opener and the chat template's tokens), so turn t needs
    ``prompts[t - 1] + t * max_new_tokens`` tokens of context."""

    limit: int
    source: str
    prompts: tuple[int, ...]
    max_new_tokens: int
    min_turns: int

    def needed(self, turns: int) -> int:
        """Context tokens that ``turns`` turns take at most."""
        return self.prompts[turns - 1] + turns * self.max_new_tokens

    @property
    def turns(self) -> int:
        return len(self.prompts)

    @property
    def turns_that_fit(self) -> int:
        """The most turns (up to those asked) that fit even at worst."""
        return sum(self.needed(turns) <= self.limit for turns in range(1, self.turns + 1))

    def as_metrics(self) -> dict[str, Any]:
        return {
            "checked": True,
            "max_model_len": self.limit,
            "source": self.source,
            "first_prompt_tokens": self.prompts[0],
            "template_tokens_per_turn": round(
                (self.prompts[-1] - self.prompts[0]) / max(self.turns - 1, 1), 1
            ),
            "max_new_tokens": self.max_new_tokens,
            "turns_asked": self.turns,
            "worst_case_tokens": self.needed(self.turns),
            "worst_case_turns_that_fit": self.turns_that_fit,
            "fits": self.needed(self.turns) <= self.limit,
        }


@dataclass
class InteractionCounts:
    """What became of the asked self-interaction conversations (turns: generated turns, the opener not
    counted). ``truncated`` and ``dropped`` are by the reason the turn after the last kept one failed."""

    asked: int = 0
    turns_asked: int = 0
    min_turns: int = 0
    complete: int = 0
    truncated: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    turns_kept: Counter[int] = field(default_factory=Counter)  # kept conversations by their turns

    def as_metrics(self) -> dict[str, Any]:
        return {
            "conversations_asked": self.asked,
            "turns_asked": self.turns_asked,
            "min_turns_kept": self.min_turns,
            "complete_conversations": self.complete,
            "truncated_conversations": sum(self.truncated.values()),
            "truncated_by_reason": dict(sorted(self.truncated.items())),
            "dropped_conversations": sum(self.dropped.values()),
            "dropped_by_reason": dict(sorted(self.dropped.items())),
            "turns_kept": sum(turns * n for turns, n in self.turns_kept.items()),
            "turns_asked_total": self.asked * self.turns_asked,
            "conversations_by_turns_kept": {str(turns): n for turns, n in sorted(self.turns_kept.items())},
        }


@dataclass
class Introspection:
    rows: list[dict[str, Any]] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)
    unused_samples: int = 0  # first-turn samples beyond the conversations asked for (not rows)
    trimmed: int = 0  # kept answers that were cut off and trimmed to a full sentence
    examples: dict[str, Chat] = field(default_factory=dict)  # one chat per part, as sent
    interaction: InteractionCounts = field(default_factory=InteractionCounts)
    context: dict[str, Any] = field(default_factory=dict)  # the context check, as the metrics show it


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


def min_turns(config: IntrospectionConfig) -> int:
    """The fewest generated turns a truncated conversation keeps: ``min_exchanges`` complete exchanges
    (an exchange is a user turn and the assistant's answer; the opener is the first user turn), or as
    many as the asked turns hold where they hold fewer."""
    exchanges = min(config.min_exchanges, math.ceil(config.turns / 2))
    return 2 * exchanges - 1


def kept_turns(answers: list[Answer], complete: bool, least: int) -> list[Answer]:
    """The turns a conversation keeps: all of a complete one; of a truncated one, its turns up to the
    last assistant turn (a trailing user turn is no training target), none when fewer than ``least``."""
    if complete:
        return answers
    kept = answers[: len(answers) - 1] if len(answers) % 2 == 0 else answers
    return kept if len(kept) >= least else []


def context_plan(
    system: str,
    openers: list[InteractionOpener],
    config: IntrospectionConfig,
    role: ModelRole,
    context: ModelContext,
) -> ContextPlan | None:
    """The asked conversation's worst case against ``context`` (None: its limit or tokenizer is not
    known here): each turn's prompt counted with every earlier turn empty, on the opener whose first
    prompt is longest, under ``system`` (the generation system prompt, constitution included)."""
    if context.limit is None or context.prompt_tokens is None or not openers:
        return None
    firsts = context.prompt_tokens([view(system, opener.text, [], True) for opener in openers])
    opener = openers[firsts.index(max(firsts))].text
    chats = [view(system, opener, [""] * turn, turn % 2 == 0) for turn in range(config.turns)]
    prompts = tuple(context.prompt_tokens(chats))
    max_new_tokens = role.sampling.max_new_tokens
    return ContextPlan(context.limit, context.source, prompts, max_new_tokens, min_turns(config))


def check_context(plan: ContextPlan) -> None:
    """Raise ContextTooSmall when even the shortest conversation kept may not fit ``plan``'s context;
    warn (ContextWarning) when the turns asked may not."""
    asked, least = plan.turns, plan.min_turns
    length, new_tokens, turns = SIZE_KEYS
    change = f"raise {length} to at least {plan.needed(asked):,}, or lower {new_tokens} or {turns}"
    needs = (
        f"{{turns}} turn(s) of up to {plan.max_new_tokens:,} new tokens need up to {{tokens:,}} tokens of "
        f"context (the first prompt, this constitution in its system prompt, takes {plan.prompts[0]:,}), "
        f"and the student has {plan.limit:,} ({plan.source})"
    )
    if plan.needed(least) > plan.limit:
        raise ContextTooSmall(
            "introspection: the shortest self-interaction conversation kept does not fit: "
            + needs.format(turns=least, tokens=plan.needed(least))
            + f"; {change} (or introspection.min_exchanges)"
        )
    if plan.needed(asked) > plan.limit:
        warnings.warn(
            "introspection: "
            + needs.format(turns=asked, tokens=plan.needed(asked))
            + f"; at worst {plan.turns_that_fit} fit. A conversation that reaches the limit keeps its "
            f"complete turns (counted as truncated_conversations). To fit: {change}.",
            ContextWarning,
            stacklevel=3,
        )


def self_interactions(
    prompts: IntrospectionPrompts,
    config: IntrospectionConfig,
    role: ModelRole,
    system: str,
    run: GenerationRun,
    result: Introspection,
    context: ModelContext | None = None,
) -> None:
    """``config.conversations`` conversations of ``config.turns`` generated turns each, generated under
    ``system`` and kept with ``config.interaction_system_prompt`` in its place (rows of
    ``run.variant`` with ``run.provenance``). A turn that fails, or whose prompt + answer limit would
    pass ``context``'s limit (not sent), ends its conversation: kept truncated or dropped (``kept_turns``)."""
    count = config.conversations
    counts = result.interaction
    counts.asked, counts.turns_asked, counts.min_turns = count, config.turns, min_turns(config)
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
    turns: dict[int, list[Answer]] = {index: [] for index in range(count)}
    ended: dict[int, str] = {}  # conversation → why its next turn failed
    for index in range(count):
        _take(index, first[index % len(openers)][index // len(openers)], config, turns, ended)
    for turn in range(2, config.turns + 1):
        speaker_first = turn % 2 == 1
        alive = [index for index in range(count) if index not in ended]
        chats = [view(system, openers[i % len(openers)].text, _texts(turns[i]), speaker_first) for i in alive]
        for index in _past_context(chats, alive, role, context):
            ended[index] = CONTEXT_LIMIT  # never sent: the answer would run into the context's end
        sent = [(index, chat) for index, chat in zip(alive, chats, strict=True) if index not in ended]
        answers = answer_chats(
            [chat for _, chat in sent],
            role,
            run,
            f"introspect-{run.variant}-turn{turn}",
            trim_cut_off=config.trim_cut_off,
        )
        for (index, _), samples in zip(sent, answers, strict=True):
            _take(index, samples[0], config, turns, ended)
    kept = keep_conversations(turns, ended, result)
    add_conversations(kept, openers, config.interaction_system_prompt, run, result)


def keep_conversations(
    turns: dict[int, list[Answer]], ended: dict[int, str], result: Introspection
) -> dict[int, list[Answer]]:
    """The conversations kept (index → its kept turns, ``kept_turns``), given each one's turns and, for
    one that ended early, why (``ended``); counted in ``result.interaction``, a dropped one also in
    ``result.rejected`` as ``self_interaction.<reason>`` (one count per conversation, so that kept +
    rejected = asked)."""
    counts = result.interaction
    kept: dict[int, list[Answer]] = {}
    for index, answers in sorted(turns.items()):
        reason = ended.get(index)
        kept_answers = kept_turns(answers, reason is None, counts.min_turns)
        if reason is None:
            counts.complete += 1
        elif kept_answers:
            counts.truncated[reason] += 1
        else:
            counts.dropped[reason] += 1
            result.rejected[f"self_interaction.{reason}"] += 1
            continue
        counts.turns_kept[len(kept_answers)] += 1
        kept[index] = kept_answers
    return kept


def _past_context(
    chats: list[Chat], indices: list[int], role: ModelRole, context: ModelContext | None
) -> list[int]:
    """The conversations (of ``indices``, one per chat) whose prompt + ``max_new_tokens`` would pass the
    context's limit (none where the limit or the tokenizer is not known here)."""
    if not chats or context is None or context.limit is None or context.prompt_tokens is None:
        return []
    room = context.limit - role.sampling.max_new_tokens
    sizes = context.prompt_tokens(chats)
    return [index for index, size in zip(indices, sizes, strict=True) if size > room]


def add_conversations(
    turns: dict[int, list[Answer]],
    openers: list[InteractionOpener],
    system: str | None,
    run: GenerationRun,
    result: Introspection,
) -> None:
    """The kept conversations (index → its kept answers) as rows of ``run.variant`` with
    ``run.provenance``, under the training system prompt ``system`` (None: no system turn); their
    trimmed answers counted (a trimmed turn a conversation did not keep is not in the corpus, so not
    counted)."""
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


def turn_problem(answer: Answer, config: IntrospectionConfig) -> str | None:
    """Why a self-interaction turn ends its conversation (``answer_problem``), or None."""
    return answer_problem(answer, config.max_answer_chars)


def _take(
    index: int,
    answer: Answer,
    config: IntrospectionConfig,
    turns: dict[int, list[Answer]],
    ended: dict[int, str],
) -> None:
    reason = turn_problem(answer, config)
    if reason:
        ended[index] = reason
    else:
        turns[index].append(answer)


def introspect(
    prompts: IntrospectionPrompts,
    constitution: Constitution,
    config: IntrospectionConfig,
    role: ModelRole,
    run: GenerationRun,
    model_label: str | None = None,
    context: ModelContext | None = None,
) -> Introspection:
    """Reflection and self-interaction conversations written by ``role`` (the variant's DPO model) with
    ``constitution`` in its system prompt, kept without it. ``model_label`` names the model in the rows'
    provenance (a folded model's folder is a local cache path). ``context``: the model's context, which
    the asked conversation is checked against before anything is generated (``check_context``) and
    each turn's prompt against while it is (None: neither). Raises ContextTooSmall (see
    ``check_context``), or CorpusShortfall when fewer than ``min_rows`` survive the filters."""
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
    if config.conversations and context is not None:  # sized before anything is generated
        openers = interleaved_openers(prompts.openers)[: config.conversations]
        plan = context_plan(systems["self_interaction"], openers, config, role, context)
        if plan is not None:
            check_context(plan)
        result.context = plan.as_metrics() if plan else {"checked": False, "source": context.source}
    reflections(prompts, config, role, systems["reflection"], run, result)
    self_interactions(prompts, config, role, systems["self_interaction"], run, result, context)
    if len(result.rows) < config.min_rows:
        raise CorpusShortfall(f"introspect {run.variant}", len(result.rows), config.min_rows, result.rejected)
    return result
