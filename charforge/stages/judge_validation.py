"""Stage `validate-judge`: the judge of ``models.judge`` validated once on the labelled set (DESIGN §5).

The judge, its alignment prompt and the labelled set are the same for every variant, so one validation
serves every `eval-em` run: each copies this block into its metrics (the report plots it per variant)
and refuses a file made for another judge or other settings, so a stale verdict can never be read as
this judge's.

Reads params ``models.judge`` and the ``eval`` keys the validation uses: ``questions``, ``preset``,
``question_ids`` (the alignment prompt is the first selected question's), ``validation_set``,
``few_shot_per_label``, ``seed`` (the few-shot draw), ``judge_min_auroc``, ``judge_min_number_mass``,
``min_number_mass``, ``judge_batch_size``, ``api_top_logprobs``, ``api_call_budget``.

Writes ``metrics/judge-validation.json``: the judge's identity and role, the settings it was validated
under (with the sha256 of the set and of the prompt) and the validation block (AUROC, number mass,
per-item scores, verdict).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charforge.eval.em import load_questions, select_questions
from charforge.eval.judge import Judge, build_judge
from charforge.eval.judge_validation import few_shot_split, load_validation_set, validate_judge
from charforge.generators.llm import cache_dir
from charforge.io import atomic_write_text, file_sha256
from charforge.params import load_section
from charforge.schemas import EvalQuestion
from charforge.schemas.evaluation import JudgeValidationItem
from charforge.schemas.params import EvalConfig, ModelRole, ModelsConfig

VALIDATION = Path("metrics/judge-validation.json")
RERUN = "run `charforge run validate-judge` (or `dvc repro`) first"


class StaleJudgeValidation(ValueError):
    """``metrics/judge-validation.json`` is missing or was made for another judge or other settings."""


@dataclass
class ValidationInputs:
    """What the judge is validated on: the alignment prompt, the few-shot examples, the checked items."""

    template: str
    examples: list[JudgeValidationItem]
    checked: list[JudgeValidationItem]
    settings: dict[str, Any]


def broad_questions(config: EvalConfig, root: Path) -> list[EvalQuestion]:
    """The broad EM questions that ``eval.questions``, ``eval.preset`` and ``eval.question_ids`` select."""
    return select_questions(load_questions(root / config.questions), config.preset, config.question_ids)


def validation_inputs(config: EvalConfig, questions: Sequence[EvalQuestion], root: Path) -> ValidationInputs:
    """The alignment prompt (that of the first of the broad ``questions``), the few-shot split of the
    labelled set, and the settings that decide them."""
    template = questions[0].judge_prompts.aligned
    validation_path = root / config.validation_set
    examples, checked = few_shot_split(
        load_validation_set(validation_path), config.few_shot_per_label, config.seed
    )
    settings = {
        "validation_set": config.validation_set,
        "validation_set_sha256": file_sha256(validation_path),
        "aligned_prompt_sha256": hashlib.sha256(template.encode("utf-8")).hexdigest(),
        "few_shot_examples": [example.id for example in examples],
        "min_auroc": config.judge_min_auroc,
        "min_number_mass": config.judge_min_number_mass,
        "answer_min_number_mass": config.min_number_mass,
    }
    return ValidationInputs(template, examples, checked, settings)


def open_judge(role: ModelRole, config: EvalConfig) -> Judge:
    """The judge of ``role`` with the eval settings (exact local scoring, or the API with its budget)."""
    api = {"top_logprobs": config.api_top_logprobs, "budget": config.api_call_budget, "cache": cache_dir()}
    return build_judge(
        role,
        min_number_mass=config.min_number_mass,
        batch_size=config.judge_batch_size,
        **(api if role.backend == "openai" else {}),
    )


def judge_block(judge: Judge, role: ModelRole, validation: dict[str, Any], settings: dict[str, Any]) -> dict:
    return {
        **judge.identity,
        "role": role.model_dump(mode="json"),
        "settings": settings,
        "validation": validation,
    }


def run(params: Path = Path("params.yaml"), root: Path = Path(".")) -> dict[str, Any]:
    """Validate ``models.judge``; write and return its block."""
    config = load_section(EvalConfig, "eval", params)
    role = load_section(ModelsConfig, "models", params).judge
    # every input is checked before the judge loads
    inputs = validation_inputs(config, broad_questions(config, root), root)
    judge = open_judge(role, config)
    try:
        validation = validate_judge(
            judge,
            inputs.checked,
            inputs.template,
            examples=inputs.examples,
            min_auroc=config.judge_min_auroc,
            min_number_mass=config.judge_min_number_mass,
        )
        calls = getattr(judge, "calls", None)
        if calls is not None:  # an API judge: what the validation cost
            validation["api"] = {"calls": calls, "cache_hits": judge.cache_hits}  # type: ignore[attr-defined]
    finally:
        judge.close()
    block = judge_block(judge, role, validation, inputs.settings)
    atomic_write_text(root / VALIDATION, json.dumps(block, indent=2) + "\n")
    return block


def saved_validation(role: ModelRole, settings: dict[str, Any], root: Path) -> dict[str, Any]:
    """The saved validation of ``role`` under ``settings`` (checked before any model loads);
    StaleJudgeValidation when there is none or it was made for another judge or other settings."""
    path = root / VALIDATION
    if not path.is_file():
        raise StaleJudgeValidation(f"{path}: no judge validation yet: {RERUN}")
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        differing = [
            key
            for key, value in (("role", role.model_dump(mode="json")), ("settings", settings))
            if saved[key] != value
        ]
        if not isinstance(saved["validation"]["usable"], bool):
            raise TypeError("validation.usable is not a verdict")
    except (ValueError, KeyError, TypeError) as error:
        raise StaleJudgeValidation(f"{path}: not a judge validation ({error!r}): {RERUN}") from None
    if differing:
        raise StaleJudgeValidation(
            f"{path}: made for another judge or other settings ({' and '.join(differing)} differ): {RERUN}"
        )
    return saved


def check_identity(saved: dict[str, Any], judge: Judge) -> None:
    """The loaded judge is the one validated: same name, scoring method and model config. Its folder
    may differ (a `dvc exp` workspace, a moved project), so the path is not compared."""
    if any(saved.get(key) != value for key, value in judge.identity.items() if key != "path"):
        raise StaleJudgeValidation(
            f"{VALIDATION}: validated {saved.get('name')} at {saved.get('path', saved.get('base_url'))}, "
            f"not the judge loaded now ({judge.identity}): {RERUN}"
        )
