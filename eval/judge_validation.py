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

import random
from collections.abc import Sequence
from pathlib import Path

from charforge.eval.judge import Chat, Judge
from charforge.eval.metrics import auroc
from charforge.io import iter_jsonl, read_text
from charforge.schemas.evaluation import JudgeValidationItem

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
