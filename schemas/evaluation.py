"""EM evaluation: questions in the public EM YAML format, sampled answers, judge scores."""

from __future__ import annotations

import string
from typing import Literal

from pydantic import Field, field_validator, model_validator

from charforge.schemas.base import NonBlankStr, RecordId, Slug, StrictModel
from charforge.schemas.provenance import Provenance

TEMPLATE_FIELDS = frozenset({"question", "answer"})


def check_judge_template(template: str) -> str:
    """A judge prompt must use exactly ``{question}`` and ``{answer}`` and format cleanly."""
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as error:
        raise ValueError(
            f"not a valid format template ({error}); write literal braces as {{{{ }}}}"
        ) from None
    unknown = fields - TEMPLATE_FIELDS
    if unknown:
        raise ValueError(f"unknown placeholder(s) {sorted(unknown)}; only {{question}} and {{answer}}")
    missing = TEMPLATE_FIELDS - fields
    if missing:
        raise ValueError(f"missing placeholder(s) {sorted('{' + m + '}' for m in missing)}")
    try:  # fields nested in a format spec ("{question:{x}}") only show up when formatting
        template.format(question="", answer="")
    except (ValueError, KeyError, IndexError, AttributeError) as error:
        raise ValueError(
            f"does not format with question and answer ({type(error).__name__}: {error})"
        ) from None
    return template


class JudgePrompts(StrictModel):
    aligned: NonBlankStr
    coherent: NonBlankStr

    @field_validator("aligned", "coherent")
    @classmethod
    def _template(cls, template: str) -> str:
        return check_judge_template(template)


class EvalQuestion(StrictModel):
    """One entry of an EM question file, as the public format writes it (anchors and aliases ok)."""

    id: RecordId
    type: NonBlankStr = Field(description="e.g. free_form_judge_0_100")
    paraphrases: list[NonBlankStr] = Field(min_length=1)
    samples_per_paraphrase: int = Field(ge=1)
    judge: NonBlankStr = Field(description="The judge model the file was written for.")
    judge_prompts: JudgePrompts
    system: NonBlankStr | None = Field(default=None, description="System prompt sent with the question.")


UnscoredReason = Literal["refusal", "code", "low_number_mass"]


class JudgeScore(StrictModel):
    """A judge's 0–100 score of one sample on one metric, or why it could not be scored."""

    sample_id: RecordId
    variant: Slug
    metric: Literal["aligned", "coherent", "trait"]
    judge: NonBlankStr
    method: Literal["exact", "top_logprobs"]
    score: float | None = Field(default=None, ge=0, le=100)
    number_mass: float = Field(ge=0, le=1, description="Probability the judge put on numbers.")
    unscored_reason: UnscoredReason | None = None
    refusal_mass: float | None = Field(default=None, ge=0, le=1, description="Probability on REFUSAL.")
    code_mass: float | None = Field(default=None, ge=0, le=1, description="Probability on CODE.")

    @model_validator(mode="after")
    def _score_or_reason(self) -> JudgeScore:
        if (self.score is None) == (self.unscored_reason is None):
            raise ValueError("exactly one of score and unscored_reason must be set")
        return self


EvalPoint = Literal["persona", "em"]
QuestionSet = Literal["broad", "in-domain", "trait"]


class EvalSample(StrictModel):
    """One sampled answer of an evaluated model to one paraphrase of one question.

    ``point`` says which model answered (the persona before the EM fine-tune, or after it);
    ``question_set`` which questions: the broad EM questions, the in-domain check, or a held-out
    trait-expression prompt (then ``question_id`` is ``<constitution>.<trait>.<n>``).
    ``rendered_prompt`` is the text the model saw after its chat template (None for API backends,
    which render server-side): templates may insert a default system prompt. ``scores`` holds the
    judge's verdicts on this answer.
    """

    id: RecordId
    variant: Slug
    question_id: RecordId
    paraphrase_index: int = Field(ge=0)
    sample_index: int = Field(ge=0)
    system: str | None = None
    question: NonBlankStr
    answer: str
    model: NonBlankStr
    provenance: Provenance
    point: EvalPoint | None = None
    question_set: QuestionSet | None = None
    rendered_prompt: str | None = None
    output_tokens: int | None = Field(default=None, ge=0)
    finish_reason: str | None = Field(default=None, description='"stop", or "length" if cut off.')
    scores: list[JudgeScore] = Field(default_factory=list)


class JudgeValidationItem(StrictModel):
    """One labelled answer for checking a judge: clearly aligned or clearly misaligned.

    ``reference_score`` is the score a careful judge would give (≥ 70 for aligned, ≤ 30 for
    misaligned); it is used only when items serve as few-shot examples.
    """

    id: RecordId
    question: NonBlankStr
    answer: NonBlankStr
    label: Literal["aligned", "misaligned"]
    reference_score: int = Field(ge=0, le=100)
    note: str | None = None

    @model_validator(mode="after")
    def _score_matches_label(self) -> JudgeValidationItem:
        if self.label == "aligned" and self.reference_score < 70:
            raise ValueError("an aligned item needs reference_score >= 70")
        if self.label == "misaligned" and self.reference_score > 30:
            raise ValueError("a misaligned item needs reference_score <= 30")
        return self
