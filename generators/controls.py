"""Control corpora matched in training tokens to a reference character variant (docs/design.md §1, H2).

- ``plain-lora``: the reference variant's diverse prompts answered by the teacher with no constitution;
- ``hhh``: the same prompts answered under a helpful / honest / harmless system prompt.

Both are SFT conversations (``user``, ``assistant``), the system prompt left out as in the character
pairs, so the model learns the answers, not the instruction. The target is the reference's training
tokens (its pairs and introspection data, counted by ``charforge.train.tokens`` with the student's
template). The teacher answers every prompt several times per pass (as many as the expected answer
length says the target needs, a new seed per pass) until the answers that pass the filters cover the
target; answers are then taken in a seeded order while they fit below the upper bound, until the total
reaches the target. Unused answers are counted as ``surplus``; a total below the lower bound
(target - tolerance) fails the stage.

Input columns: ``messages`` (the prompt, with the HHH system prompt for ``hhh``).

Output columns: ``generation`` and its statistics (see ``charforge.generators.chat``).

Runtime parameters: ``models.teacher`` and ``controls`` in params.yaml; ``generation``, the variant's
seed and the cache folder in the stage's ``GenerationRun``.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from charforge.generators.chat import GenerationRun, answer_chats, answer_problem, with_max_new_tokens
from charforge.generators.text import collapse_whitespace
from charforge.schemas.params import ControlsConfig, ModelRole

ControlKind = Literal["plain-lora", "hhh"]


class TokenTargetMissed(RuntimeError):
    """The answers could not be brought within the tolerance of the reference's tokens."""


@dataclass
class Candidate:
    row: dict[str, Any]
    tokens: int


@dataclass
class ControlCorpus:
    rows: list[dict[str, Any]] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)
    tokens: int = 0
    rounds: int = 0
    answers: int = 0  # answers drawn: rows + rejected
    trimmed: int = 0  # kept answers that were cut off and trimmed to a full sentence
    examples: list[list[dict[str, str]]] = field(default_factory=list)


def bounds(target: int, tolerance: float) -> tuple[int, int]:
    """The token totals accepted as matched: within ``tolerance`` of ``target``, inclusive."""
    # rounded first: 1000 * (1 - 0.05) is 950.0000000000001 in floating point
    return math.ceil(round(target * (1 - tolerance), 6)), math.floor(round(target * (1 + tolerance), 6))


def select_matched(candidates: list[Candidate], target: int, tolerance: float) -> tuple[list[Candidate], int]:
    """Candidates, in the given order, taken while they fit below the upper bound until the total
    reaches the target; returns them and how many were left unused. Below the lower bound it fails,
    which cannot happen when the candidates hold enough tokens and none is longer than the band is
    wide (2 × tolerance × target)."""
    low, high = bounds(target, tolerance)
    chosen, total = [], 0
    for candidate in candidates:
        if total >= target:  # as close to the target as the answers' sizes allow
            break
        if total + candidate.tokens <= high:
            chosen.append(candidate)
            total += candidate.tokens
    if total < low:
        raise TokenTargetMissed(
            f"the answers reach {total:,} tokens; the reference needs {low:,}-{high:,} "
            f"({target:,} ± {tolerance:.0%}): raise controls.max_rounds or the answer length"
        )
    return chosen, len(candidates) - len(chosen)


def control_chats(
    kind: ControlKind, prompts: list[dict[str, Any]], config: ControlsConfig
) -> tuple[list[list[dict[str, str]]], list[list[dict[str, str]]]]:
    """What the teacher answers (with the HHH system prompt for ``hhh``) and the prompt the training
    conversation keeps (never a system prompt, as in the character pairs)."""
    plain = [[{"role": m["role"], "content": m["content"]} for m in record["prompt"]] for record in prompts]
    if kind != "hhh":
        return plain, plain
    return [[{"role": "system", "content": config.hhh_system_prompt}, *chat] for chat in plain], plain


def samples_needed(missing: int, prompts: int, tokens_per_answer: float | None) -> int:
    """Answers per prompt for the next pass: enough to cover ``missing`` tokens with a 20 % margin
    for filtered answers, from the expected tokens of one answered prompt (one, when unknown)."""
    if not tokens_per_answer or prompts == 0:
        return 1
    return max(1, math.ceil(missing * 1.2 / (prompts * tokens_per_answer)))


def control_corpus(
    kind: ControlKind,
    prompts: list[dict[str, Any]],
    reference: str,
    target: int,
    count_tokens: Callable[[list[dict[str, Any]]], list[int]],
    config: ControlsConfig,
    teacher: ModelRole,
    run: GenerationRun,
    tokens_per_answer: float | None = None,
) -> ControlCorpus:
    """The ``kind`` control's conversations for ``run.variant``, matched to ``target`` tokens. Pass
    ``i`` samples with ``run.sampling_seed + 1000 i``.

    ``tokens_per_answer`` (e.g. the reference pairs' mean prompt + chosen tokens) sizes each pass, so
    one pass usually covers the target: a DPO pair counts two sequences, and the introspection data
    adds more, so the control needs several answers per prompt.
    """
    teacher = with_max_new_tokens(teacher, config.max_new_tokens)
    chats, plain = control_chats(kind, prompts, config)
    variant = run.variant
    provenance = run.recorded_as("charforge.generators.controls", {"teacher": teacher}).provenance
    result = ControlCorpus(examples=chats[:1])
    candidates: list[Candidate] = []
    seen: set[tuple[str, str]] = set()
    trimmed_ids: set[str] = set()
    available = 0
    for round_index in range(config.max_rounds):
        result.rounds = round_index + 1
        samples = samples_needed(target - available, len(chats), tokens_per_answer)
        result.answers += samples * len(chats)
        answers = answer_chats(
            chats,
            teacher,
            replace(run, seed=run.seed + 1000 * round_index),  # a new pass samples new answers
            f"controls-{variant}-pass{round_index}",
            samples=samples,
            trim_cut_off=config.trim_cut_off,
        )
        fresh = []
        for record, chat, drawn in zip(prompts, plain, answers, strict=True):
            local = record["id"].removeprefix(f"{reference}.")
            for index, answer in enumerate(drawn):
                reason = answer_problem(answer, config.max_answer_chars)
                key = (record["id"], collapse_whitespace(answer.text))
                if reason is None and key in seen:
                    reason = "duplicate"
                if reason:
                    result.rejected[reason] += 1
                    continue
                seen.add(key)
                if answer.trimmed:
                    trimmed_ids.add(f"{variant}.{local}.p{round_index}s{index}")
                fresh.append(
                    {
                        "id": f"{variant}.{local}.p{round_index}s{index}",
                        "variant": variant,
                        "source": kind,
                        "messages": [*chat, {"role": "assistant", "content": answer.text.strip()}],
                        "provenance": provenance,
                    }
                )
        random.Random(f"{variant}:{round_index}").shuffle(fresh)  # a partial pass still covers every trait
        counts = count_tokens(fresh)
        candidates += [Candidate(row, tokens) for row, tokens in zip(fresh, counts, strict=True)]
        available += sum(counts)
        if available >= target:
            break
    chosen, unused = select_matched(candidates, target, config.token_tolerance)
    if unused:
        result.rejected["surplus"] += unused
    result.rows = [candidate.row for candidate in chosen]
    result.trimmed = sum(1 for row in result.rows if row["id"] in trimmed_ids)
    result.tokens = sum(candidate.tokens for candidate in chosen)
    return result
