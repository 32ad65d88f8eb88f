"""Stage `em-finetune-defended`: the EM fine-tune of one unit under one EM defence (issue 24;
docs/design.md §1, "EM defences"), ``models/<variant>/em-<defence>-e<seed>``.

It is `em-finetune` itself (the same EM examples, persona, training seed and settings as the undefended
unit of that seed) with only the defence added (``charforge.train.defences``): ``inoculation`` puts its
system prompt on every example (and the held-out loss is measured with it too,
``held_out_loss_as_trained``, so "did not learn" is told from "learned, tied to the prompt");
``interleave`` adds benign rows; ``kl`` adds a KL term to the persona on benign rows
(``charforge.train.kl``). A module of its own so that the undefended units never depend on the
defences' code. ``defence`` in the metrics says what it changed.

Reads: params ``params_for(variant, defence)``; what `em-finetune` reads;
``corpora/build/em/benign.parquet`` (interleave, kl: `benign-data`'s).
Writes: ``models/<variant>/em-<defence>-e<seed>/`` and
``metrics/<variant>/em-finetune-<defence>-e<seed>.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from charforge.params import DEFAULT_PARAMS, load_section
from charforge.paths import BENIGN, EM_SHARED, build_path
from charforge.schemas.manifest import manifest_path_for
from charforge.schemas.params import BENIGN_DEFENCES, DefencesConfig
from charforge.stages import em_finetune
from charforge.stages.common import read_input
from charforge.train.accounting import ComputeRecord
from charforge.train.defences import DefenceDataError, defended_rows, inoculated_rows
from charforge.train.runner import corpus_parent
from charforge.variants import Variant

PARAMS = (*em_finetune.PARAMS, "defences.inoculation")


def params_for(variant: Variant, defence: str = "inoculation") -> tuple[str, ...]:
    return (*em_finetune.params_for(variant), f"defences.{defence}")


def benign_rows(root: Path, defence: str) -> list[dict[str, Any]]:
    """benign-data's rows, or why there are none (it skips when grid.defences needs none)."""
    path = build_path(root, EM_SHARED, BENIGN)
    manifest = manifest_path_for(path)
    if manifest.is_file():
        skipped = (json.loads(manifest.read_text(encoding="utf-8")).get("metrics") or {}).get("skipped")
        if skipped:
            raise DefenceDataError(
                f"{defence}: {path} holds no benign rows: benign-data skipped them ({skipped}); add "
                f"{defence} to grid.defences and run `charforge run benign-data`"
            )
    return read_input(path, "conversations")


def run(
    variant_name: str,
    em_seed: int,
    defence: str,
    params: Path = DEFAULT_PARAMS,
    root: Path = Path("."),
) -> ComputeRecord | None:
    config = load_section(DefencesConfig, "defences", params)
    benign: list[dict[str, Any]] = []
    parents = []
    if defence in BENIGN_DEFENCES:
        benign = benign_rows(root, defence)
        parents.append(corpus_parent(build_path(root, EM_SHARED, BENIGN), "conversations"))

    def kl_trainer(trainer_class: type, max_length: int | None) -> type:
        from charforge.train.kl import kl_regularised

        return kl_regularised(trainer_class, benign, config.kl.coefficient, max_length)

    prompt = config.inoculation.system_prompt
    return em_finetune.run(
        variant_name,
        em_seed,
        params,
        root,
        em_finetune.Defence(
            name=defence,
            rows=lambda rows: defended_rows(rows, defence, config, benign),
            held_out=(lambda rows: inoculated_rows(rows, prompt)) if defence == "inoculation" else None,
            trainer=kl_trainer if defence == "kl" else None,
            parents=parents,
            params=(f"defences.{defence}",),
        ),
    )
