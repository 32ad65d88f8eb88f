"""The EM defences as changes to the EM fine-tune (docs/design.md §1, "EM defences"; issue 24).

- ``inoculation``: the inoculation system prompt on every EM training example (before a system prompt the
  example already has); the loss stays on the answers, so the prompt is context, never a target.
- ``interleave``: every EM example kept, ``round(n × fraction / (1 − fraction))`` benign rows added (the
  first in a fixed hash order of the shared benign corpus), so the EM examples and their count are those
  of the undefended unit and only benign rows are added.
- ``kl``: the EM rows unchanged; the benign rows go to the KL term (``charforge.train.kl``).

Each returns the rows to train on and a record of what changed, for the unit's metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from charforge.generators.seeding import take_order
from charforge.schemas.messages import with_system_prompt
from charforge.schemas.params import DefencesConfig

INTERLEAVED_SOURCE = "benign-interleaved"  # the ``source`` of a benign row in an interleaved training set


class DefenceDataError(ValueError):
    """The defence cannot be applied as params ask (e.g. too few benign rows)."""


def inoculated_rows(rows: Sequence[dict[str, Any]], system_prompt: str) -> list[dict[str, Any]]:
    """``rows`` with the inoculation prompt before each conversation's own system prompt, if any."""
    return [{**row, "messages": with_system_prompt(row["messages"], system_prompt)} for row in rows]


def benign_count(em_rows: int, fraction: float) -> int:
    """Benign rows to add to ``em_rows`` EM rows so that they are ``fraction`` of the mixed set."""
    return round(em_rows * fraction / (1 - fraction))


def defended_rows(
    rows: list[dict[str, Any]], defence: str, config: DefencesConfig, benign: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The EM fine-tune's training rows under ``defence``, and what the defence did to them."""
    if defence == "inoculation":
        prompt = config.inoculation.system_prompt
        changed = inoculated_rows(rows, prompt)
        return changed, {"system_prompt": prompt, "rows_inoculated": len(changed)}
    if defence == "interleave":
        wanted = benign_count(len(rows), config.interleave.fraction)
        if wanted == 0:  # the unit would train exactly as the undefended one, and be read as a defence
            raise DefenceDataError(
                f"interleave: fraction {config.interleave.fraction} of {len(rows)} EM rows adds no benign "
                "row: raise defences.interleave.fraction (or em_data.rows)"
            )
        if wanted > len(benign):
            raise DefenceDataError(
                f"interleave: {len(rows)} EM rows at fraction {config.interleave.fraction} need {wanted} "
                f"benign rows, but benign-data kept {len(benign)}: add prompts to "
                f"{config.benign.prompts}, raise defences.benign.samples_per_prompt or lower the fraction"
            )
        added = [{**row, "source": INTERLEAVED_SOURCE} for row in take_order(benign)[:wanted]]
        return [*rows, *added], {
            "fraction": config.interleave.fraction,
            "em_rows": len(rows),
            "benign_rows": wanted,
            "benign_available": len(benign),
            "benign_share": wanted / (len(rows) + wanted),
        }
    if defence == "kl":
        if not benign:
            raise DefenceDataError("kl: benign-data kept no benign rows for the KL term")
        return list(rows), {"coefficient": config.kl.coefficient, "benign_rows": len(benign)}
    raise DefenceDataError(f"unknown EM defence {defence!r}: inoculation, interleave or kl")
