"""The diversity knob: which situations and framings a diversity level may draw on (docs/design.md §1, H1).

Situations tagged with an excluded domain (``prompts.excluded_domains`` and ``em_data.domain``: the EM
fine-tuning domains and rehearsed requests for harm) are never eligible, at any level. Per trait and
variant seed one order of the eligible situations, and per situation one order of its framings (asker ×
tone × length), is drawn once; level k takes the first n_k situations and the first f_k framings of
each, so level k+1 contains level k's. ``charforge.generators.prompts`` writes the prompts.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from charforge.schemas.params import EM_EXCLUDED_DOMAINS, DiversityLevel, PromptsConfig
from charforge.schemas.situations import Situation, SituationTaxonomy

Framing = tuple[str, str, str]  # asker, tone, length
Plan = list[tuple[Situation, list[Framing]]]


@dataclass(frozen=True)
class Eligibility:
    """Which situations any level may draw on: those tagged with none of the excluded domains."""

    excluded_domains: tuple[str, ...]
    eligible: tuple[Situation, ...]
    excluded: dict[str, list[str]]  # situation id -> the excluded domains it is tagged with
    domains_tagging_nothing: tuple[str, ...]  # excluded, but no situation carries the tag

    def report(self) -> dict[str, Any]:
        return {
            "excluded_domains": list(self.excluded_domains),
            "eligible": [situation.id for situation in self.eligible],
            "excluded": self.excluded,
            "excluded_domains_tagging_no_situation": list(self.domains_tagging_nothing),
        }


def eligibility(taxonomy: SituationTaxonomy, excluded_domains: list[str], em_domain: str) -> Eligibility:
    """The situations no excluded domain tags; ``em_domain`` (the EM training set's) is always excluded."""
    known = {*taxonomy.domains(), *EM_EXCLUDED_DOMAINS}
    unknown = sorted(set(excluded_domains) - known)
    if unknown:  # a misspelt domain would exclude nothing, silently
        raise ValueError(
            f"prompts.excluded_domains: {', '.join(unknown)} tags no situation and is not a known EM domain "
            f"(known: {', '.join(sorted(known))})"
        )
    # em_data.domain may be the user's own (source: jsonl) and tag nothing: recorded, not refused
    excluded = tuple(sorted({*excluded_domains, em_domain}))
    eligible, dropped = [], {}
    for situation in taxonomy.situations:
        hits = sorted(set(situation.domains) & set(excluded))
        if hits:
            dropped[situation.id] = hits
        else:
            eligible.append(situation)
    untagged = tuple(domain for domain in excluded if domain not in taxonomy.domains())
    return Eligibility(excluded, tuple(eligible), dropped, untagged)


def drawn_order(eligible: tuple[Situation, ...], seed: int, trait_id: str) -> Plan:
    """Every eligible situation, in the order drawn for this trait and seed, each with all of its
    framings in their drawn order. Drawn once, whatever the level, so that levels nest."""
    situations = list(eligible)
    random.Random(f"{seed}:{trait_id}:situations").shuffle(situations)
    order = []
    for situation in situations:
        framings = list(itertools.product(situation.askers, situation.tones, situation.lengths))
        # seeded per situation: a situation's framings keep their order whatever else is eligible
        random.Random(f"{seed}:{trait_id}:{situation.id}:framings").shuffle(framings)
        order.append((situation, framings))
    return order


def level_plan(order: Plan, level: DiversityLevel) -> Plan:
    """The first ``level.situations`` situations of ``order``, each with its first ``level.framings``
    framings (all where null; a situation with fewer framings keeps all of its own)."""
    count = level.situations or len(order)
    return [(situation, framings[: level.framings or len(framings)]) for situation, framings in order[:count]]


def level_plans(
    taxonomy: SituationTaxonomy,
    config: PromptsConfig,
    level_index: int,
    em_domain: str,
    seed: int,
    trait_ids: Sequence[str],
) -> tuple[Eligibility, dict[str, Plan]]:
    """What level ``level_index`` may draw on: the eligible situations, and per trait the level's
    situations with their framings (the first ones of the order drawn for that trait and ``seed``).
    ValueError when the level is not defined or asks for more situations than remain eligible."""
    if level_index not in config.levels:
        raise ValueError(f"diversity level {level_index} is not defined in params (prompts.levels)")
    level = config.levels[level_index]
    allowed = eligibility(taxonomy, config.excluded_domains, em_domain)
    domains = ", ".join(allowed.excluded_domains)
    if (level.situations or 0) > len(allowed.eligible):
        raise ValueError(
            f"prompts.levels.{level_index}.situations asks for {level.situations} situations, but only "
            f"{len(allowed.eligible)} of the taxonomy remain eligible once the domains {domains} are "
            f"excluded (excluded: {', '.join(sorted(allowed.excluded))})"
        )
    if not allowed.eligible:
        raise ValueError(f"every situation of the taxonomy lies in an excluded domain ({domains})")
    orders = {trait_id: drawn_order(allowed.eligible, seed, trait_id) for trait_id in trait_ids}
    return allowed, {trait_id: level_plan(order, level) for trait_id, order in orders.items()}
