"""Stage `validate-judge`: the judge of ``models.judge``, and each of ``models.judges``, validated once
on the labelled set (docs/design.md §5).

The judge, its alignment prompt and the labelled set are the same for every variant, so one validation
serves every `eval-em` run: each copies this block into its metrics (the report plots it per variant)
and refuses a file made for another judge or other settings, so a stale verdict can never be read as
this judge's.

Reads: params ``PARAMS``: ``models.judge`` and the ``eval`` keys the validation uses (every distinct
alignment and coherence prompt of the selected questions is validated; ``eval.seed`` draws the few-shot
examples); the question files (broad and in-domain) and the labelled set; ``models/roles/judge.json``.
Writes: ``metrics/judge-validation.json``: the judge's identity and role, the settings it was validated
under (with the sha256 of the set and of each prompt) and the validation block (per prompt and subset:
AUROC, mean absolute error, style bias, number mass, per-item scores; the verdict).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from charforge.eval.judge_validation import (
    Limits,
    ValidationInputs,
    broad_questions,
    in_domain_questions,
    judge_block,
    open_judge,
    validate_judge,
    validation_inputs,
)
from charforge.io import atomic_write_text
from charforge.params import DEFAULT_PARAMS, load_section
from charforge.paths import JUDGE_VALIDATION
from charforge.schemas.params import EmDataConfig, EvalConfig, JudgeRoles, ModelRole

PARAMS = (
    "models.judge",
    "models.judges",
    "eval.questions",
    "eval.preset",
    "eval.question_ids",
    "eval.in_domain_questions",
    "em_data.domain",  # eval.in_domain_questions: auto follows it
    "eval.validation_set",
    "eval.few_shot_per_label",
    "eval.seed",
    "eval.judge_min_auroc",
    "eval.judge_min_number_mass",
    "eval.judge_min_subset_auroc",
    "eval.judge_max_bias",
    "eval.min_number_mass",
    "eval.judge_batch_size",
    "eval.api_top_logprobs",
    "eval.api_call_budget",
)


def validate_one(role: ModelRole, config: EvalConfig, inputs: ValidationInputs) -> dict[str, Any]:
    """Load ``role``'s judge, validate it, unload it; its block."""
    judge = open_judge(role, config)
    try:
        validation = validate_judge(
            judge,
            inputs.checked,
            inputs.templates,
            advisory=inputs.advisory,
            examples=inputs.examples,
            limits=Limits.of(config),
        )
        calls = getattr(judge, "calls", None)
        if calls is not None:  # an API judge: what the validation cost
            validation["api"] = {"calls": calls, "cache_hits": judge.cache_hits}  # type: ignore[attr-defined]
    finally:
        judge.close()
    return judge_block(judge, role, validation, inputs.settings)


def run(params: Path = DEFAULT_PARAMS, root: Path = Path(".")) -> dict[str, Any]:
    """Validate ``models.judge`` and every one of ``models.judges``; write and return the block
    (``models.judge``'s, with the others' under ``further_judges``)."""
    config = load_section(EvalConfig, "eval", params)
    role, *further = load_section(JudgeRoles, "models", params).all
    # every input is checked before a judge loads
    domain = load_section(EmDataConfig, "em_data", params).domain
    in_domain = in_domain_questions(config, domain, root)
    inputs = validation_inputs(config, broad_questions(config, root), in_domain, root)
    block = validate_one(role, config, inputs)
    if further:  # one judge in memory at a time
        block["further_judges"] = [validate_one(other, config, inputs) for other in further]
    atomic_write_text(root / JUDGE_VALIDATION, json.dumps(block, indent=2) + "\n")
    return block
