"""Contextual prompts per trait, with a diversity knob that changes diversity and nothing else.

Each trait gets exactly ``prompts_per_trait`` prompts at every diversity level: its training seed
questions (marked ``is_seed``) plus generated ones. The trait's held-out seed questions
(``held_out.per_trait``, chosen by ``Constitution.held_out``, the same at every level) are never a prompt
here nor a writing request's example, and a generated prompt that repeats or nearly repeats a held-out
question of any trait of the constitution is rejected (``near_held_out``): trait expression is measured on
them. Every level asks the teacher for the same thing, a message that gives the assistant a chance to
show the trait's statement; a level decides only what the generated prompts may vary over: how many
situations of the taxonomy and how many framings (who asks, in which tone, at which length) per
situation, nested from level to level, excluded domains never (``charforge.generators.levels``).
Generation slots are drawn deterministically from the variant's seed; the teacher writes one message
per slot in a distilabel pipeline (resumable through its cache); a pass over the finished text drops
empty, over-long, cut-off, meta and duplicate prompts (exact and near, MinHash-free Jaccard on word
3-shingles, so it works offline and survives a resumed run) and counts each by reason; bounded
backfill rounds replace what was dropped. If they cannot reach the size, the stage fails with the
shortfall and its reasons instead of writing a smaller corpus. Under ``prompts.source: imported`` no
prompt is written: ``imported_prompts`` draws them, seeded, from the constitution's imported prompts
corpus (a few-shot file's ``additional_questions``, as the public pipeline uses them) after the same
filters, seed questions included, the same number per trait.

Input columns: ``messages`` (the writing request built for each slot), slot metadata.

Output columns: ``generation`` (the user prompt), ``distilabel_metadata`` (token statistics).

Runtime parameters: ``models.teacher`` (backend, model, sampling), ``prompts`` (size, levels, excluded
domains, backfill, filters), ``held_out.per_trait`` and ``em_data.domain`` in params.yaml;
``generation`` (runner, batch size, seed), the variant's seed and the cache folder in the stage's
``GenerationRun``.
"""

from __future__ import annotations

import json
import random
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from charforge.generators.chat import GenerationRun, answer_chats
from charforge.generators.levels import Plan, level_plans
from charforge.generators.text import (
    META_RE,
    WRITER_SYSTEM,
    clean,
    jaccard,
    joined_words,
    shingles,
    trim_to_sentence,
)
from charforge.schemas import Constitution, Trait
from charforge.schemas.constitution import seed_question_id
from charforge.schemas.params import HeldOutConfig, ModelRole, PromptsConfig
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
    """One prompt to write: for a trait, in a situation, with a framing."""

    slot_id: str
    trait_id: str
    situation: str
    asker: str
    tone: str
    length: str


@dataclass
class PromptsResult:
    """What ``generate_prompts`` made: the records, the rejections by reason, how many kept prompts were
    cut off and trimmed, and what the level drew on (``level``: JSON-ready, for the manifest)."""

    records: list[dict[str, Any]]
    rejected: Counter[str]
    trimmed: int
    level: dict[str, Any]


@dataclass
class Selection:
    """Prompts kept per trait, in slot order; rejections counted by reason; cut-off prompts kept after
    trimming them to their last complete sentence, counted too."""

    kept: dict[str, list[tuple[Slot, str]]] = field(default_factory=dict)
    rejected: Counter[str] = field(default_factory=Counter)
    trimmed: int = 0


def make_slots(trait: Trait, plan: Plan, count: int, round_index: int, rng: random.Random) -> list[Slot]:
    """``count`` slots spread evenly (round robin) over the level's situations, taken in an order ``rng``
    shuffles: with fewer slots than situations, which ones get a slot is drawn from the whole level, not
    always the first ones of the order that nests the levels (else a wider level would add nothing)."""
    situations = list(plan)
    rng.shuffle(situations)
    slots = []
    for index in range(count):
        situation, framings = situations[index % len(situations)]
        asker, tone, length = rng.choice(framings)
        slot_id = f"{trait.id}.r{round_index}.{index:03d}"
        slots.append(Slot(slot_id, trait.id, situation.id, asker, tone, length))
    return slots


def writing_request(
    slot: Slot, trait: Trait, situation: Situation, examples: Sequence[str]
) -> list[dict[str, str]]:
    """The chat the teacher answers with one user message: the same request at every level. The example
    message is one of ``examples`` (the trait's training seeds: a held-out one shown here would be
    paraphrased into training)."""
    # a stable choice (str hash() is salted per process, which would defeat the step cache)
    example = examples[zlib.crc32(slot.slot_id.encode()) % len(examples)]
    user = (
        "Write one message a user might send to an AI assistant.\n"
        f"Situation: {situation.description}\n"
        f"The user: {slot.asker}. Tone: {slot.tone}. Length: {LENGTH_HINT[slot.length]}.\n"
        "The message should give the assistant a natural chance to show this trait, without "
        f'mentioning it: "{trait.statement}"\n'
        f'For the kind of message only (do not copy it): "{example}"'
    )
    return [{"role": "system", "content": WRITER_SYSTEM}, {"role": "user", "content": user}]


def select(
    generated: list[tuple[Slot, str, bool]],
    training_seeds: dict[str, list[str]],
    held_out: Sequence[str],
    config: PromptsConfig,
    selection: Selection,
    held_out_jaccard: float,
) -> None:
    """Add generated prompts to ``selection`` after the filters; rejections counted by reason.
    ``training_seeds``: per trait id, the seed questions in the corpus (a new prompt must not repeat
    them); ``held_out``: the constitution's held-out questions, of every trait (nor those, nearly:
    ``held_out_jaccard``)."""
    seen: dict[str, list[frozenset[tuple[str, ...]]]] = {}
    exact: dict[str, set[str]] = {}
    for trait_id, seeds in training_seeds.items():  # seeds and kept prompts: what new ones must not repeat
        texts = list(seeds) + [text for _, text in selection.kept.get(trait_id, [])]
        exact[trait_id] = {joined_words(text) for text in texts}
        seen[trait_id] = [shingles(text) for text in texts]
    held_exact = {joined_words(text) for text in held_out}
    held_shingles = [shingles(text) for text in held_out]
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
        elif joined_words(text) in held_exact or any(
            jaccard(shingles(text), other) >= held_out_jaccard for other in held_shingles
        ):
            reason = "near_held_out"
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
    """The teacher's message for each slot's writing request (``requests``, in slot order), through
    ``answer_chats`` (one distilabel pipeline, cached under a name that holds the requests' content, so
    a changed request is never answered from the cache): (slot, text, cut off?) in slot order. A failed
    generation comes back empty (rejected as such). The teacher samples with ``run.sampling_seed``.

    Slots with the same request (at low levels many share a situation, a framing and an example) are
    sent as one chat with one sample per slot: backends seed sampling from a request's content, so
    separate identical requests would come back identical and be rejected as duplicates, and no
    backfill round could help. Chats are grouped by how many samples they need, one pipeline per size.
    """
    groups: dict[str, list[int]] = {}  # request (as JSON) -> the slots asking it, in slot order
    for index, request in enumerate(requests):
        groups.setdefault(json.dumps(request, sort_keys=True), []).append(index)
    by_size: dict[int, list[list[int]]] = {}
    for members in groups.values():
        by_size.setdefault(len(members), []).append(members)
    texts: dict[int, tuple[str, bool]] = {}
    for size, member_lists in sorted(by_size.items()):
        chats = [requests[members[0]] for members in member_lists]
        name = pipeline_name if size == 1 else f"{pipeline_name}-x{size}"
        for members, samples in zip(
            member_lists, answer_chats(chats, teacher, run, name, samples=size), strict=True
        ):
            texts.update(
                (slot_index, (answer.text, answer.cut_off))
                for slot_index, answer in zip(members, samples, strict=True)
            )
    return [(slot, *texts[index]) for index, slot in enumerate(slots)]


def generate_prompts(
    constitution: Constitution,
    taxonomy: SituationTaxonomy,
    config: PromptsConfig,
    level_index: int,
    teacher: ModelRole,
    run: GenerationRun,
    *,
    em_domain: str,
    held_out: HeldOutConfig,
) -> PromptsResult:
    """Prompt records for ``run.variant`` (exactly ``prompts_per_trait`` per trait), the rejections by
    reason, how many kept prompts were cut off by the token limit and trimmed to a sentence, and what the
    level drew on. Situations in ``config.excluded_domains`` or ``em_domain`` are never drawn. The order
    of situations and framings is drawn from ``run.seed`` per trait (not per level); the teacher samples
    with ``run.sampling_seed``. ``held_out.per_trait`` seed questions per trait are kept out."""
    seed, variant = run.seed, run.variant
    seeds = SeedSplit.of(constitution, config, held_out)
    traits, held, held_texts, training_seeds = seeds.traits, seeds.held, seeds.held_texts, seeds.training
    allowed, plans = level_plans(taxonomy, config, level_index, em_domain, seed, [t.id for t in traits])
    level = config.levels[level_index]
    situations = {situation.id: situation for situation in taxonomy.situations}
    selection = Selection()

    needed = {trait.id: config.prompts_per_trait - len(seeds.pairs[trait.id]) for trait in traits}
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
                slots += make_slots(trait, plans[trait.id], count, round_index, rng)
        requests = [
            writing_request(
                slot, by_id[slot.trait_id], situations[slot.situation], training_seeds[slot.trait_id]
            )
            for slot in slots
        ]
        generated = generate_slots(slots, requests, teacher, run, f"prompts-{variant}-round{round_index}")
        select(generated, training_seeds, held_texts, config, selection, held_out.near_duplicate_jaccard)
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
    framings_used: set[tuple[str, ...]] = set()
    used: dict[str, set[str]] = {trait.id: set() for trait in traits}
    for trait in traits:
        records += seeds.records(trait, variant, level_index, provenance)
        for slot, text in selection.kept.get(trait.id, [])[: needed[trait.id]]:
            framing = {"asker": slot.asker, "tone": slot.tone, "length": slot.length}
            framings_used.add((slot.situation, slot.asker, slot.tone, slot.length))
            used[trait.id].add(slot.situation)
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
    drawn = {
        "level": level_index,
        "situations": level.situations,
        "framings": level.framings,
        "per_trait": {
            trait_id: {
                "situations": [situation.id for situation, _ in plan],  # the level's, in drawn order
                "framings": sum(len(framings) for _, framings in plan),
                "situations_used": sorted(used[trait_id]),  # those the kept prompts are in
            }
            for trait_id, plan in plans.items()
        },
        "situations_used": sorted(set().union(*used.values())),
        "held_out": {
            "per_trait": held_out.per_trait,
            "ids": [seed_question_id(t.id, index) for t in constitution.traits for index in held[t.id]],
        },
        "framings_used": len(framings_used),
        **allowed.report(),
    }
    return PromptsResult(records, selection.rejected, selection.trimmed, drawn)


@dataclass
class SeedSplit:
    """A constitution's seed questions for one corpus: the traits used (``max_traits``), per trait the
    held-out indices (every trait's: eval may score them) and the training seeds as (index, question),
    and the held-out texts of every trait."""

    traits: list[Trait]
    held: dict[str, list[int]]
    held_texts: list[str]
    pairs: dict[str, list[tuple[int, str]]]

    @property
    def training(self) -> dict[str, list[str]]:
        return {trait_id: [question for _, question in pairs] for trait_id, pairs in self.pairs.items()}

    @classmethod
    def of(cls, constitution: Constitution, config: PromptsConfig, held_out: HeldOutConfig) -> SeedSplit:
        """Raises ValueError when a trait has more training seeds than ``prompts_per_trait``."""
        traits = constitution.traits[: config.max_traits or len(constitution.traits)]
        held = {trait.id: constitution.held_out(trait, held_out.per_trait) for trait in constitution.traits}
        held_texts = [t.questions[index] for t in constitution.traits for index in held[t.id]]
        pairs = {
            trait.id: [(index, q) for index, q in enumerate(trait.questions) if index not in held[trait.id]]
            for trait in traits
        }
        for trait in traits:
            if len(pairs[trait.id]) > config.prompts_per_trait:
                raise ValueError(
                    f"trait {trait.id} has {len(pairs[trait.id])} training seed questions (after "
                    f"{len(held[trait.id])} held out), more than prompts_per_trait "
                    f"({config.prompts_per_trait})"
                )
        return cls(traits, held, held_texts, pairs)

    def records(
        self, trait: Trait, variant: str, level_index: int, provenance: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """The trait's training seed questions as prompt records: no situation of the taxonomy, labelled
        as such at every level; the local id is the question's place in the constitution (gaps held
        out)."""
        return [
            _record(
                variant,
                seed_question_id(trait.id, index),
                trait,
                SEED_SITUATION,
                level_index,
                True,
                None,
                question,
                provenance,
            )
            for index, question in self.pairs[trait.id]
        ]


def imported_prompts(
    constitution: Constitution,
    rows: Sequence[dict[str, Any]],
    config: PromptsConfig,
    level_index: int,
    run: GenerationRun,
    *,
    held_out: HeldOutConfig,
    source: str,
) -> PromptsResult:
    """Prompt records for ``run.variant`` drawn from an imported prompts corpus (``rows``: the records
    `import-constitution` wrote to ``source``) instead of written by the teacher: per trait its training
    seed questions plus imported prompts drawn at random (seeded by the variant's seed) from those that
    pass the generated prompts' filters (held-out questions of any trait, repeats and near repeats,
    over-long, meta text), ``prompts_per_trait`` in all. An imported prompt keeps its local id and its
    provenance (the importer's). Raises PromptShortfall when a trait has too few, ValueError when the
    corpus names a trait the constitution lacks (it belongs to another constitution)."""
    seeds = SeedSplit.of(constitution, config, held_out)
    known = {trait.id for trait in constitution.traits}
    unknown = sorted({row["trait_id"] for row in rows} - known)
    if unknown:
        raise ValueError(
            f"{source} holds prompts for trait(s) constitution {constitution.name} does not have: "
            f"{', '.join(unknown)} (import the constitution and its prompts again, together)"
        )
    by_local: dict[str, dict[str, Any]] = {}
    candidates: list[tuple[Slot, str, bool]] = []
    for row in sorted(rows, key=lambda row: row["id"]):
        if row["trait_id"] not in seeds.pairs:  # past max_traits
            continue
        local_id = row["id"].split(".", 1)[-1]  # <name>.<trait>.imported<k> -> <trait>.imported<k>
        by_local[local_id] = row
        slot = Slot(local_id, row["trait_id"], row["situation"], "", "", "short")
        candidates.append((slot, row["prompt"][-1]["content"], False))
    selection = Selection()
    select(candidates, seeds.training, seeds.held_texts, config, selection, held_out.near_duplicate_jaccard)
    needed = {trait.id: config.prompts_per_trait - len(seeds.pairs[trait.id]) for trait in seeds.traits}
    shortfall = missing_per_trait(needed, selection)
    if shortfall:
        raise PromptShortfall(shortfall, selection.rejected)
    provenance = run.recorded_as(
        "charforge.generators.prompts", {}, constitution_sha256=constitution.sha256()
    ).provenance
    records: list[dict[str, Any]] = []
    drawn: dict[str, dict[str, int]] = {}
    for trait in seeds.traits:
        records += seeds.records(trait, run.variant, level_index, provenance)
        kept = selection.kept.get(trait.id, [])
        rng = random.Random(f"{run.seed}:imported:{trait.id}")
        for slot, text in rng.sample(kept, needed[trait.id]):
            row = by_local[slot.slot_id]
            record = _record(
                run.variant, slot.slot_id, trait, row["situation"], level_index, False, None, text, {}
            )
            records.append({**record, "provenance": row["provenance"]})
        available = sum(slot.trait_id == trait.id for slot, _, _ in candidates)
        drawn[trait.id] = {"imported": available, "passed_filters": len(kept), "drawn": needed[trait.id]}
    not_drawn = sum(len(selection.kept.get(t, [])) - n for t, n in needed.items())
    if not_drawn:
        selection.rejected["not_drawn"] += not_drawn  # valid, not needed: counted, not hidden
    level = {
        "level": level_index,
        "source": "imported",
        "file": source,
        "imported_per_trait": drawn,
        "held_out": {
            "per_trait": held_out.per_trait,
            "ids": [seed_question_id(t.id, i) for t in constitution.traits for i in seeds.held[t.id]],
        },
        # the prompts were imported with this constitution, or with an earlier edit of it
        "constitution_matches": {row["provenance"].get("constitution_sha256") for row in rows}
        == {constitution.sha256()},
    }
    return PromptsResult(records, selection.rejected, selection.trimmed, level)


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
