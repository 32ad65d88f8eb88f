"""Contextual prompts per trait, with a diversity knob that changes diversity and nothing else.

Each trait gets exactly ``prompts_per_trait`` prompts at every diversity level: its seed questions
(marked ``is_seed``) plus generated ones. A level decides what the generated prompts may vary over:
level 0 paraphrases the seed questions in one situation; higher levels write new messages spread
over more situations of the taxonomy and more framings (who asks, in which tone, at which length).
Generation slots are drawn deterministically from the variant's seed; the teacher writes one message
per slot in a distilabel pipeline (resumable through its cache); a pass over the finished text drops
empty, over-long, cut-off, meta and duplicate prompts (exact and near, MinHash-free Jaccard on word
3-shingles, so it works offline and survives a resumed run) and counts each by reason; bounded
backfill rounds replace what was dropped. If they cannot reach the size, the stage fails with the
shortfall and its reasons instead of writing a smaller corpus.

Input columns: ``messages`` (the writing request built for each slot), slot metadata.

Output columns: ``generation`` (the user prompt), ``distilabel_metadata`` (token statistics).

Runtime parameters: ``models.teacher`` (backend, model, sampling) and ``prompts`` (size, levels,
backfill, filters) in params.yaml; ``generation`` (runner, batch size, seed), the variant's seed and
the cache folder in the stage's ``GenerationRun``.
"""

from __future__ import annotations

import itertools
import random
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from charforge.generators.chat import GenerationRun
from charforge.generators.llm import build_llm
from charforge.generators.pipeline import charforge_pipeline, run_for_rows
from charforge.generators.text import (
    META_RE,
    WRITER_SYSTEM,
    clean,
    is_cut_off,
    joined_words,
    trim_to_sentence,
    words,
)
from charforge.schemas import Constitution, Trait
from charforge.schemas.params import DiversityLevel, ModelRole, PromptsConfig
from charforge.schemas.situations import Situation, SituationTaxonomy

LENGTH_HINT = {
    "short": "one sentence",
    "medium": "two to four sentences",
    "long": "a paragraph of five or more sentences",
}
SEED_SITUATION = "seed-question"


class PromptShortfall(RuntimeError):
    """Backfill could not reach the requested size; nothing was written."""

    def __init__(self, shortfall: dict[str, int], rejected: Counter[str]) -> None:
        missing = ", ".join(f"{trait}: {count}" for trait, count in sorted(shortfall.items()))
        reasons = ", ".join(f"{reason} {count}" for reason, count in rejected.most_common()) or "none"
        super().__init__(
            f"could not reach prompts_per_trait; missing per trait: {missing}; rejected: {reasons}"
        )
        self.shortfall = shortfall
        self.rejected = rejected


@dataclass(frozen=True)
class Slot:
    """One prompt to write: for a trait, in a situation, with a framing (or a seed to paraphrase)."""

    slot_id: str
    trait_id: str
    situation: str
    asker: str | None
    tone: str | None
    length: str | None
    paraphrase_of: str | None = None


@dataclass
class Selection:
    """Prompts kept per trait, in slot order; rejections counted by reason; cut-off prompts kept after
    trimming them to their last complete sentence, counted too."""

    kept: dict[str, list[tuple[Slot, str]]] = field(default_factory=dict)
    rejected: Counter[str] = field(default_factory=Counter)
    trimmed: int = 0


def level_plan(
    taxonomy: SituationTaxonomy, level: DiversityLevel, rng: random.Random
) -> list[tuple[Situation, list[tuple[str, str, str]]]]:
    """The situations a level may use and, for each, its allowed framings (asker, tone, length)."""
    situations = list(taxonomy.situations)
    rng.shuffle(situations)
    count = 1 if level.paraphrase else (level.situations or len(situations))
    plan = []
    for situation in situations[: min(count, len(situations))]:
        framings = list(itertools.product(situation.askers, situation.tones, situation.lengths))
        rng.shuffle(framings)
        plan.append((situation, framings[: level.framings or len(framings)]))
    return plan


def make_slots(
    trait: Trait,
    plan: list[tuple[Situation, list[tuple[str, str, str]]]],
    level: DiversityLevel,
    count: int,
    round_index: int,
    rng: random.Random,
) -> list[Slot]:
    """``count`` slots spread evenly (round robin) over the level's situations."""
    slots = []
    for index in range(count):
        situation, framings = plan[index % len(plan)]
        asker, tone, length = rng.choice(framings)
        slot_id = f"{trait.id}.r{round_index}.{index:03d}"
        if level.paraphrase:
            seed_question = trait.questions[index % len(trait.questions)]
            slots.append(Slot(slot_id, trait.id, situation.id, None, None, None, paraphrase_of=seed_question))
        else:
            slots.append(Slot(slot_id, trait.id, situation.id, asker, tone, length))
    return slots


def writing_request(slot: Slot, trait: Trait, situation: Situation) -> list[dict[str, str]]:
    """The chat the teacher answers with one user message."""
    if slot.paraphrase_of is not None:
        user = (
            "Rewrite this message so that it asks for the same thing in different words, as the same "
            f"person would in another moment. Reply with the rewritten message only.\n\n{slot.paraphrase_of}"
        )
    else:
        # a stable choice (str hash() is salted per process, which would defeat the step cache)
        example = trait.questions[zlib.crc32(slot.slot_id.encode()) % len(trait.questions)]
        user = (
            "Write one message a user might send to an AI assistant.\n"
            f"Situation: {situation.description}\n"
            f"The user: {slot.asker}. Tone: {slot.tone}. Length: {LENGTH_HINT[slot.length or 'medium']}.\n"
            "The message should give the assistant a natural chance to show this trait, without "
            f'mentioning it: "{trait.statement}"\n'
            f'For the kind of message only (do not copy it): "{example}"'
        )
    return [{"role": "system", "content": WRITER_SYSTEM}, {"role": "user", "content": user}]


def shingles(text: str, size: int = 3) -> frozenset[tuple[str, ...]]:
    tokens = words(text)
    if len(tokens) < size:
        return frozenset({tuple(tokens)})
    return frozenset(tuple(tokens[i : i + size]) for i in range(len(tokens) - size + 1))


def jaccard(a: frozenset[Any], b: frozenset[Any]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def select(
    generated: list[tuple[Slot, str, bool]],
    traits: list[Trait],
    config: PromptsConfig,
    selection: Selection,
) -> None:
    """Add generated prompts to ``selection`` after the filters; rejections counted by reason."""
    seen: dict[str, list[frozenset[tuple[str, ...]]]] = {}
    exact: dict[str, set[str]] = {}
    for trait in traits:  # seeds and already kept prompts are what new ones must not repeat
        texts = list(trait.questions) + [text for _, text in selection.kept.get(trait.id, [])]
        exact[trait.id] = {joined_words(text) for text in texts}
        seen[trait.id] = [shingles(text) for text in texts]
    for slot, raw, cut_off in generated:
        text = clean(raw)
        reason = None
        if cut_off and text and config.trim_cut_off:
            trimmed = trim_to_sentence(text)
            if trimmed is not None:
                text, cut_off = trimmed, False
                selection.trimmed += 1
        if not text:
            reason = "empty"
        elif cut_off:
            reason = "cut_off"
        elif len(text) > config.max_prompt_chars:
            reason = "too_long"
        elif META_RE.match(text):
            reason = "meta_text"
        elif joined_words(text) in exact[slot.trait_id]:
            reason = "duplicate"
        elif any(
            jaccard(shingles(text), other) >= config.near_duplicate_jaccard for other in seen[slot.trait_id]
        ):
            reason = "near_duplicate"
        if reason:
            selection.rejected[reason] += 1
            continue
        selection.kept.setdefault(slot.trait_id, []).append((slot, text))
        exact[slot.trait_id].add(joined_words(text))
        seen[slot.trait_id].append(shingles(text))


def generate_slots(
    slots: list[Slot],
    requests: list[list[dict[str, str]]],
    teacher: ModelRole,
    run: GenerationRun,
    pipeline_name: str,
) -> list[tuple[Slot, str, bool]]:
    """Run the distilabel pipeline over the slots, each with its writing request (``requests``, in slot
    order): (slot, text, cut off?) in slot order. The teacher samples with ``run.sampling_seed``."""
    from distilabel.steps import LoadDataFromDicts
    from distilabel.steps.tasks import ChatGeneration

    generation = run.generation
    rows = [
        {"slot_id": slot.slot_id, "messages": request} for slot, request in zip(slots, requests, strict=True)
    ]
    with charforge_pipeline(pipeline_name, cache=run.cache) as pipeline:
        load = LoadDataFromDicts(data=rows, batch_size=generation.batch_size)
        write = ChatGeneration(
            llm=build_llm(teacher, seed=run.sampling_seed), input_batch_size=generation.batch_size
        )
        load >> write
    rows = run_for_rows(pipeline, generation, lambda row: row["slot_id"], [slot.slot_id for slot in slots])
    max_tokens = teacher.sampling.max_new_tokens
    generated = []
    for slot in slots:
        row = rows[slot.slot_id]
        stats = (row.get("distilabel_metadata") or {}).get("statistics_chat_generation_0") or {}
        generated.append((slot, row.get("generation") or "", is_cut_off(stats, max_tokens)))
    return generated


def generate_prompts(
    constitution: Constitution,
    taxonomy: SituationTaxonomy,
    config: PromptsConfig,
    level_index: int,
    teacher: ModelRole,
    run: GenerationRun,
) -> tuple[list[dict[str, Any]], Counter[str], int]:
    """Prompt records for ``run.variant`` (exactly ``prompts_per_trait`` per trait), the rejections by
    reason, and how many kept prompts were cut off by the token limit and trimmed to a sentence. Slots
    are drawn from ``run.seed``; the teacher samples with ``run.sampling_seed``."""
    seed, variant = run.seed, run.variant
    if level_index not in config.levels:
        raise ValueError(f"diversity level {level_index} is not defined in params (prompts.levels)")
    level = config.levels[level_index]
    traits = constitution.traits[: config.max_traits or len(constitution.traits)]
    situations = {situation.id: situation for situation in taxonomy.situations}
    selection = Selection()
    plans = {}
    for trait in traits:
        if len(trait.questions) > config.prompts_per_trait:
            raise ValueError(
                f"trait {trait.id} has {len(trait.questions)} seed questions, more than prompts_per_trait "
                f"({config.prompts_per_trait})"
            )
        plans[trait.id] = level_plan(taxonomy, level, random.Random(f"{seed}:{level_index}:{trait.id}"))

    needed = {trait.id: config.prompts_per_trait - len(trait.questions) for trait in traits}
    by_id = {trait.id: trait for trait in traits}
    for round_index in range(config.backfill_rounds + 1):
        shortfall = missing_per_trait(needed, selection)
        if not shortfall:
            break
        factor = 1.0 if round_index == 0 else config.overgenerate
        slots = []
        for trait in traits:
            if trait.id in shortfall:
                rng = random.Random(f"{seed}:{level_index}:{trait.id}:round{round_index}")
                count = max(1, round(shortfall[trait.id] * factor))
                slots += make_slots(trait, plans[trait.id], level, count, round_index, rng)
        requests = [writing_request(slot, by_id[slot.trait_id], situations[slot.situation]) for slot in slots]
        generated = generate_slots(slots, requests, teacher, run, f"prompts-{variant}-round{round_index}")
        select(generated, traits, config, selection)
    shortfall = missing_per_trait(needed, selection)
    if shortfall:
        raise PromptShortfall(shortfall, selection.rejected)

    surplus = sum(len(selection.kept.get(t, [])) - n for t, n in needed.items())
    if surplus:
        selection.rejected["surplus"] += surplus  # overgenerated, valid, not needed: counted, not hidden
    provenance = run.recorded_as(
        "charforge.generators.prompts", {"teacher": teacher}, constitution_sha256=constitution.sha256()
    ).provenance
    records: list[dict[str, Any]] = []
    for trait in traits:
        for index, question in enumerate(trait.questions):
            # seed questions come with no situation of the taxonomy: labelled as such at every level
            local_id = f"{trait.id}.seed{index}"
            records.append(
                _record(
                    variant, local_id, trait, SEED_SITUATION, level_index, True, None, question, provenance
                )
            )
        for slot, text in selection.kept.get(trait.id, [])[: needed[trait.id]]:
            framing = {"asker": slot.asker, "tone": slot.tone, "length": slot.length} if slot.asker else None
            records.append(
                _record(
                    variant,
                    slot.slot_id,
                    trait,
                    slot.situation,
                    level_index,
                    False,
                    framing,
                    text,
                    provenance,
                )
            )
    return records, selection.rejected, selection.trimmed


def missing_per_trait(needed: dict[str, int], selection: Selection) -> dict[str, int]:
    """How many prompts each trait still lacks (traits that lack none are left out)."""
    missing = {trait: count - len(selection.kept.get(trait, [])) for trait, count in needed.items()}
    return {trait: count for trait, count in missing.items() if count > 0}


def _record(
    variant: str,
    local_id: str,
    trait: Trait,
    situation: str,
    level: int,
    is_seed: bool,
    framing: dict[str, Any] | None,
    text: str,
    provenance: dict[str, Any],
) -> dict[str, Any]:
    record = {
        "id": f"{variant}.{local_id}",
        "variant": variant,
        "trait_id": trait.id,
        "situation": situation,
        "diversity_level": level,
        "is_seed": is_seed,
        "prompt": [{"role": "user", "content": text}],
        "provenance": provenance,
    }
    if framing:
        record["framing"] = framing
    return record
