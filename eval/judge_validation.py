"""Judge validation on every run: can this judge tell a clearly aligned answer from a clearly bad one?

A labelled set of clearly aligned and clearly misaligned answers (``corpora/em/judge-validation.jsonl``,
kind ``judge-validation``) is scored with the run's judge and alignment prompt. Two figures decide
whether its EM figures may be read at all: the separation (AUROC of aligned over misaligned items,
over the items it scored) and the mean probability mass it put on numbers. Below either threshold in
params, or with too few items scored to compute the AUROC, the judge is flagged **unusable**; its EM
figures are then marked so in the metrics and the report and must never read as a verdict.

Few-shot examples, when asked for, are drawn from the same set (balanced: the same number per label;
shuffled with the run's seed, since small judges copy the last example's score) and left out of the
validation figures.

Input columns: ``id``, ``question``, ``answer``, ``label``, ``reference_score`` of the set.

Output columns: none; ``validate_judge`` returns the validation block of the metrics.

Runtime parameters: ``eval.validation_set``, ``eval.judge_min_auroc``, ``eval.judge_min_number_mass``,
``eval.few_shot_per_label``, ``eval.seed``.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charforge.eval.judge import Chat, Judge, build_judge
from charforge.eval.metrics import auroc
from charforge.generators.llm import cache_dir
from charforge.io import file_sha256, iter_jsonl, read_text
from charforge.paths import JUDGE_VALIDATION
from charforge.schemas import EvalQuestion
from charforge.schemas.evaluation import JudgeValidationItem
from charforge.schemas.params import EvalConfig, ModelRole

UNUSABLE_NOTE = "JUDGE UNUSABLE: these figures are no verdict (the judge failed validation)"


class ValidationSetError(ValueError):
    """The validation set file is invalid; the message lists FILE:LINE: field: problem."""


def load_validation_set(path: Path) -> list[JudgeValidationItem]:
    from charforge.validate import validate_file

    report = validate_file(path, "judge-validation")
    if not report.valid:
        raise ValidationSetError("\n".join(map(str, report.problems)))
    return [JudgeValidationItem.model_validate(value) for _, value in iter_jsonl(read_text(path))]


def few_shot_split(
    items: Sequence[JudgeValidationItem], per_label: int, seed: int
) -> tuple[list[JudgeValidationItem], list[JudgeValidationItem]]:
    """(examples, the rest): ``per_label`` items of each label, shuffled together."""
    if per_label == 0:
        return [], list(items)
    rng = random.Random(seed)
    examples: list[JudgeValidationItem] = []
    for label in ("aligned", "misaligned"):
        pool = sorted((item for item in items if item.label == label), key=lambda item: item.id)
        if len(pool) <= per_label:
            raise ValueError(f"few_shot_per_label={per_label} leaves no {label} validation item to check")
        examples.extend(rng.sample(pool, per_label))
    rng.shuffle(examples)
    chosen = {item.id for item in examples}
    return examples, [item for item in items if item.id not in chosen]


def judge_chat(
    template: str, question: str, answer: str, examples: Sequence[JudgeValidationItem] = ()
) -> Chat:
    """The judge's chat: few-shot turns (prompt → reference score), then the answer to score."""
    chat: Chat = []
    for example in examples:
        chat.append(
            {"role": "user", "content": template.format(question=example.question, answer=example.answer)}
        )
        chat.append({"role": "assistant", "content": str(example.reference_score)})
    chat.append({"role": "user", "content": template.format(question=question, answer=answer)})
    return chat


def validate_judge(
    judge: Judge,
    items: Sequence[JudgeValidationItem],
    template: str,
    *,
    examples: Sequence[JudgeValidationItem] = (),
    min_auroc: float,
    min_number_mass: float,
) -> dict[str, object]:
    """Score the labelled items; return AUROC, mean number mass, per-item results and the verdict."""
    verdicts = judge.judge([judge_chat(template, item.question, item.answer, examples) for item in items])
    scored = [(item, v) for item, v in zip(items, verdicts, strict=True) if v.score is not None]
    separation = auroc(
        [v.score for item, v in scored if item.label == "aligned"],  # type: ignore[misc]
        [v.score for item, v in scored if item.label == "misaligned"],  # type: ignore[misc]
    )
    mean_mass = sum(v.number_mass for v in verdicts) / len(verdicts) if verdicts else 0.0
    reasons = []
    if separation is None:
        reasons.append("too few validation items scored to measure separation (AUROC)")
    elif separation < min_auroc:
        reasons.append(f"AUROC {separation:.3f} < eval.judge_min_auroc {min_auroc}")
    if mean_mass < min_number_mass:
        reasons.append(f"mean number mass {mean_mass:.3f} < eval.judge_min_number_mass {min_number_mass}")
    return {
        "usable": not reasons,
        "reasons": reasons,
        "auroc": separation,
        "mean_number_mass": mean_mass,
        "items": len(items),
        "scored": len(scored),
        "few_shot_examples": [example.id for example in examples],
        "thresholds": {"min_auroc": min_auroc, "min_number_mass": min_number_mass},
        "per_item": [
            {
                "id": item.id,
                "label": item.label,
                "score": verdict.score,
                "number_mass": round(verdict.number_mass, 6),
                "unscored_reason": verdict.unscored_reason,
            }
            for item, verdict in zip(items, verdicts, strict=True)
        ],
    }


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
    from charforge.eval.em import load_questions, select_questions  # eval.em imports this module

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


def saved_validation(role: ModelRole, settings: dict[str, Any], root: Path) -> dict[str, Any]:
    """The saved validation of ``role`` under ``settings`` (checked before any model loads);
    StaleJudgeValidation when there is none or it was made for another judge or other settings."""
    path = root / JUDGE_VALIDATION
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
    """The loaded judge is the one validated: same name, scoring method, model (by content, so its folder
    may differ: a `dvc exp` workspace, a moved project) and model config."""
    if any(saved.get(key) != value for key, value in judge.identity.items()):
        raise StaleJudgeValidation(
            f"{JUDGE_VALIDATION}: validated {saved.get('name')} ("
            f"{saved.get('model', saved.get('base_url'))}), "
            f"not the judge loaded now ({judge.identity}): {RERUN}"
        )
