"""Stage `benign-data` (once for the grid): the benign rows of the ``interleave`` and ``kl`` EM defences,
the student's own answers to the general prompts of ``defences.benign.prompts`` (docs/design.md §1, "EM
defences"). One run for every arm, so every defended arm trains on the same benign rows.

With neither defence in ``grid.defences`` nothing is generated: the corpus is written empty, with
``skipped`` saying why in its manifest and metrics (DVC has no stage conditional on a param).

Reads: params ``PARAMS``; the prompt file (``corpora/benign/``); ``models/roles/student.json``.
Writes: ``corpora/build/em/benign.parquet`` with its manifest (rejections by reason), and
``metrics/em/benign-data.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from charforge.params import DEFAULT_PARAMS, load_section, recorded
from charforge.paths import BENIGN, EM_SHARED
from charforge.schemas import Manifest
from charforge.schemas.params import (
    BENIGN_DEFENCES,
    DefencesConfig,
    DefencesGrid,
    EmDataConfig,
    GenerationConfig,
    ModelRole,
)
from charforge.stages.common import parent, token_totals, write_stage_corpus

STAGE = "benign-data"
# em_data.rows and defences.interleave: a shortfall of interleave's benign rows fails here, not in each unit
PARAMS = (
    "models.student",
    "generation",
    "grid.defences",
    "defences.benign",
    "defences.interleave",
    "em_data.rows",
)


def run(params: Path = DEFAULT_PARAMS, root: Path = Path(".")) -> Manifest:
    from charforge.generators.benign import BenignCorpus, benign_corpus, load_benign_prompts
    from charforge.generators.chat import CorpusShortfall, GenerationRun
    from charforge.train.defences import benign_count

    student = load_section(ModelRole, "models.student", params)
    generation = load_section(GenerationConfig, "generation", params)
    config = load_section(DefencesConfig, "defences", params).benign
    defences = load_section(DefencesGrid, "grid", params).defences
    fraction = load_section(DefencesConfig, "defences", params).interleave.fraction
    em_rows = load_section(EmDataConfig, "em_data", params).rows
    source = root / config.prompts
    readers = [defence for defence in defences if defence in BENIGN_DEFENCES]
    metrics: dict[str, Any] = {"needed_by": readers}
    if readers:
        prompts, repeated = load_benign_prompts(source)
        result = benign_corpus(prompts, config, student, GenerationRun(EM_SHARED, 0, generation))
        metrics.update(
            prompts=len(prompts),
            repeated_prompts_skipped=repeated,
            answers=result.answers,
            kept_trimmed_cut_off=result.trimmed,
        )
        if "interleave" in defences and em_rows is not None:  # every arm trains on exactly em_rows rows
            wanted = benign_count(em_rows, fraction)
            metrics["interleave_needs"] = wanted
            if len(result.rows) < wanted:
                raise CorpusShortfall(
                    f"benign-data: interleave at fraction {fraction} on {em_rows} EM rows (add prompts to "
                    f"{config.prompts} or raise defences.benign.samples_per_prompt)",
                    len(result.rows),
                    wanted,
                    result.rejected,
                )
    else:
        result = BenignCorpus()
        metrics["skipped"] = (
            f"no defence of grid.defences ({', '.join(defences) or 'none'}) trains on benign rows"
        )
    metrics["tokens"] = token_totals(student, result.rows)
    return write_stage_corpus(
        STAGE,
        root,
        EM_SHARED,
        BENIGN,
        "conversations",
        result,
        params=recorded(PARAMS, params),
        parents=[parent(source, "benign-prompts")] if readers else [],
        metrics=metrics,
    )
