"""Stage `validate-judge`: the judge of ``models.judge`` validated once on the labelled set
(docs/design.md §5).

The judge, its alignment prompt and the labelled set are the same for every variant, so one validation
serves every `eval-em` run: each copies this block into its metrics (the report plots it per variant)
and refuses a file made for another judge or other settings, so a stale verdict can never be read as
this judge's.

Reads: params ``PARAMS``: ``models.judge`` and the ``eval`` keys the validation uses (every distinct
alignment and coherence prompt of the selected questions is validated; ``eval.seed`` draws the few-shot
examples); the question files and the labelled set; ``models/roles/judge.json``.
Writes: ``metrics/judge-validation.json``: the judge's identity and role, the settings it was validated
under (with the sha256 of the set and of each prompt) and the validation block (per prompt and subset:
AUROC, mean absolute error, style bias, number mass, per-item scores; the verdict).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from charforge.eval.judge_validation import (
    broad_questions,
    judge_block,
    open_judge,
    validate_judge,
    validation_inputs,
)
from charforge.io import atomic_write_text
from charforge.params import DEFAULT_PARAMS, load_section
from charforge.paths import JUDGE_VALIDATION
from charforge.schemas.params import EvalConfig, ModelRole

PARAMS = (
    "models.judge",
    "eval.questions",
    "eval.preset",
    "eval.question_ids",
    "eval.validation_set",
    "eval.few_shot_per_label",
    "eval.seed",
    "eval.judge_min_auroc",
    "eval.judge_min_number_mass",
    "eval.judge_max_style_bias",
    "eval.min_number_mass",
    "eval.judge_batch_size",
    "eval.api_top_logprobs",
    "eval.api_call_budget",
)


def run(params: Path = DEFAULT_PARAMS, root: Path = Path(".")) -> dict[str, Any]:
    """Validate ``models.judge``; write and return its block."""
    config = load_section(EvalConfig, "eval", params)
    role = load_section(ModelRole, "models.judge", params)
    # every input is checked before the judge loads
    inputs = validation_inputs(config, broad_questions(config, root), root)
    judge = open_judge(role, config)
    try:
        validation = validate_judge(
            judge,
            inputs.checked,
            inputs.templates,
            examples=inputs.examples,
            min_auroc=config.judge_min_auroc,
            min_number_mass=config.judge_min_number_mass,
            max_style_bias=config.judge_max_style_bias,
        )
        calls = getattr(judge, "calls", None)
        if calls is not None:  # an API judge: what the validation cost
            validation["api"] = {"calls": calls, "cache_hits": judge.cache_hits}  # type: ignore[attr-defined]
    finally:
        judge.close()
    block = judge_block(judge, role, validation, inputs.settings)
    atomic_write_text(root / JUDGE_VALIDATION, json.dumps(block, indent=2) + "\n")
    return block
