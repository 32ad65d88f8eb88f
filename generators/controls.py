"""Control corpora matched in training tokens to a reference character variant (docs/design.md §1, H2).

- ``plain-lora``: the reference variant's diverse prompts answered by the teacher with no constitution;
- ``hhh``: the same prompts answered under a helpful / honest / harmless system prompt.

A control trains two adapters in the character arm's two slots (``CONTROL_SLOTS``): the ``dpo-slot``
corpus is matched to the reference's pairs, the ``sft`` corpus to its introspection data. Both are SFT
conversations (``user``, ``assistant``), the system prompt left out as in the character pairs, so the
model learns the answers, not the instruction. Each target is the reference corpus's training tokens
after the trainer's truncation (``charforge.train.tokens``, the student's template). For each corpus the
teacher answers every prompt several times per pass (as many as the expected answer length says the
target needs; each pass and each corpus its own seed) until the answers that pass the filters cover
the target; answers are then taken in a seeded order while they fit below the upper bound, until the
total reaches the target. An answer drawn for one corpus is never used in the other (a repeat is
counted as ``duplicate``); unused answers are counted as ``surplus``; a total below the lower bound
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

from charforge.generators.chat import (
    GenerationRun,
    answer_chats,
    answer_problem,
    kept_samples,
    with_max_new_tokens,
)
from charforge.generators.text import collapse_whitespace
from charforge.schemas.params import ControlsConfig, ModelRole

ControlKind = Literal["plain-lora", "hhh"]
# Each control seed samples in its own block of seeds: 100 passes of 1000 (two slots per pass).
SEED_STRIDE = 100_000


@dataclass(frozen=True)
class ControlSlot:
    """One of a control's two corpora: the character adapter slot it trains in, its file under
    ``corpora/build/<control>/``, and the reference corpus it is matched to, with that corpus's kind and
    the params section of the trainer that truncates it."""

    name: str
    corpus: str
    reference_corpus: str
    reference_kind: str
    reference_trainer: str
    seed_offset: int  # added to each pass's seed (< 1000): the two corpora never sample with one seed


CONTROL_SLOTS = (
    ControlSlot("dpo-slot", "control-dpo-slot.parquet", "pairs.parquet", "pairs", "train_dpo", 0),
    ControlSlot("sft", "control.parquet", "introspection.parquet", "conversations", "train_sft", 500),
)


# Above this (candidates × upper bound) the exact search is not run; by then answers are far shorter
# than the band, and the greedy pass fits.
EXACT_SELECTION_LIMIT = 20_000_000


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
    reaches the target; returns them and how many were left unused. Where that stays below the lower
    bound (answers longer than the band is wide, 2 × tolerance × target: a small reference), an exact
    search over the candidates' sizes looks for a subset inside the band; with none, it fails."""
    low, high = bounds(target, tolerance)
    chosen, total = [], 0
    for candidate in candidates:
        if total >= target:  # as close to the target as the answers' sizes allow
            break
        if total + candidate.tokens <= high:
            chosen.append(candidate)
            total += candidate.tokens
    if total < low and len(candidates) * high <= EXACT_SELECTION_LIMIT:
        # a band narrower than the answers (small corpora): an exact subset-sum search finds a fit
        exact = _subset_in_band(candidates, target, low, high)
        if exact is not None:
            chosen, total = exact, sum(candidate.tokens for candidate in exact)
    if total < low:
        raise TokenTargetMissed(
            f"the answers reach {total:,} tokens; the reference needs {low:,}-{high:,} "
            f"({target:,} ± {tolerance:.0%}): raise controls.max_rounds or the answer length"
        )
    return chosen, len(candidates) - len(chosen)


def _subset_in_band(candidates: list[Candidate], target: int, low: int, high: int) -> list[Candidate] | None:
    """The candidates, in their order, whose total is the reachable one closest to ``target`` within
    [low, high] (0/1 subset sum; each total is reached first with the earliest candidates), or None."""
    reached_by = [-2] * (high + 1)  # the candidate that first reached each total; -1: the empty sum
    reached_by[0] = -1
    for index, candidate in enumerate(candidates):
        for total in range(high, candidate.tokens - 1, -1):
            if reached_by[total] == -2 and reached_by[total - candidate.tokens] != -2:
                reached_by[total] = index
    fits = [total for total in range(low, high + 1) if reached_by[total] != -2]
    if not fits:
        return None
    total = min(fits, key=lambda value: (abs(value - target), value))
    picked = []
    while total:
        index = reached_by[total]
        picked.append(index)
        total -= candidates[index].tokens
    return [candidates[index] for index in sorted(picked)]


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
    *,
    slot: ControlSlot = CONTROL_SLOTS[1],
    seen: set[tuple[str, str]] | None = None,
) -> ControlCorpus:
    """The ``kind`` control's ``slot`` conversations for ``run.variant``, matched to ``target`` tokens
    (``count_tokens``: per-row training tokens, after truncation). Pass ``i`` samples with
    ``generation.seed + SEED_STRIDE × variant seed + 1000 i + slot.seed_offset``: no pass of one control
    seed samples with a seed another control seed's passes use (``controls.max_rounds`` < 100).

    ``tokens_per_answer`` (e.g. the reference pairs' mean prompt + chosen tokens) sizes each pass, so
    one pass usually covers the target: a DPO pair counts two sequences, and the introspection data
    holds longer conversations, so the control needs several answers per prompt. ``seen`` holds the
    (prompt id, answer) keys drawn so far, shared between a control's corpora so that no answer is
    used in both; the answers drawn here are added to it.
    """
    teacher = with_max_new_tokens(teacher, config.max_new_tokens)
    chats, plain = control_chats(kind, prompts, config)
    variant = run.variant
    provenance = run.recorded_as("charforge.generators.controls", {"teacher": teacher}).provenance
    result = ControlCorpus(examples=chats[:1])
    candidates: list[Candidate] = []
    seen = set() if seen is None else seen
    trimmed_ids: set[str] = set()
    available = 0
    for round_index in range(config.max_rounds):
        result.rounds = round_index + 1
        samples = samples_needed(target - available, len(chats), tokens_per_answer)
        result.answers += samples * len(chats)
        answers = answer_chats(
            chats,
            teacher,
            # a new pass samples new answers; the other corpus's passes use other seeds
            replace(run, seed=SEED_STRIDE * run.seed + 1000 * round_index + slot.seed_offset),
            f"controls-{variant}-{slot.name}-pass{round_index}",
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
                row_id = f"{variant}.{local}.{slot.name}.p{round_index}s{index}"
                if answer.trimmed:
                    trimmed_ids.add(row_id)
                fresh.append(
                    {
                        "id": row_id,
                        "variant": variant,
                        "source": kind,
                        "messages": [*chat, {"role": "assistant", "content": answer.text.strip()}],
                        "provenance": provenance,
                    }
                )
        random.Random(f"{variant}:{slot.name}:{round_index}").shuffle(
            fresh
        )  # a partial pass covers every trait
        counts = count_tokens(fresh)
        candidates += [Candidate(row, tokens) for row, tokens in zip(fresh, counts, strict=True)]
        available += sum(counts)
        if available >= target:
            break
    try:
        chosen, unused = select_matched(candidates, target, config.token_tolerance)
    except TokenTargetMissed as missed:  # say which of the two corpora missed
        raise TokenTargetMissed(
            f"{variant} {slot.corpus} (matched to {reference}'s {slot.reference_corpus}): {missed}"
        ) from None
    if unused:
        result.rejected["surplus"] += unused
    result.rows = [candidate.row for candidate in chosen]
    result.trimmed = sum(1 for row in result.rows if row["id"] in trimmed_ids)
    result.tokens = sum(candidate.tokens for candidate in chosen)
    return result


def answered_in_full(
    kind: ControlKind,
    prompts: list[dict[str, Any]],
    samples: int,
    config: ControlsConfig,
    teacher: ModelRole,
    run: GenerationRun,
    source: str,
) -> ControlCorpus:
    """Every prompt answered ``samples`` times in the ``kind`` control's own way, each answer that
    passes the filters kept (no token matching): what a control trains on beside its matched rows when
    a hypothesis asks every arm to see the same prompts (``introspection.em_reflection_prompts``).
    Rows have ``source``; rejections are counted as ``<source with _>.<reason>``, as introspection's."""
    teacher = with_max_new_tokens(teacher, config.max_new_tokens)
    chats, plain = control_chats(kind, prompts, config)
    provenance = run.recorded_as("charforge.generators.controls", {"teacher": teacher}).provenance
    result = ControlCorpus(examples=chats[:1])
    answers = answer_chats(
        chats,
        teacher,
        run,
        f"controls-{run.variant}-{source}",
        samples=samples,
        trim_cut_off=config.trim_cut_off,
    )
    result.answers = samples * len(chats)
    prefix = source.replace("-", "_")
    for record, chat, drawn in zip(prompts, plain, answers, strict=True):
        for index, answer in kept_samples(drawn, config.max_answer_chars, result.rejected, prefix):
            result.trimmed += answer.trimmed
            result.rows.append(
                {
                    "id": f"{run.variant}.{record['id']}.{index}",
                    "variant": run.variant,
                    "source": source,
                    "messages": [*chat, {"role": "assistant", "content": answer.text.strip()}],
                    "provenance": provenance,
                }
            )
    return result
