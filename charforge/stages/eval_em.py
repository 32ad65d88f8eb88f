"""Stage `eval-em`: EM evaluation of one variant before and after its EM fine-tune (docs/design.md §2, §5).

Reads params ``params_for(variant)`` (``models.student`` and the persona weights of its kind make the
evaluated models through ``charforge.train.compose.model_for``); the question files, the judge validation
set and the constitutions named there; the adapters under ``models/<variant>/``.

For each evaluation point (``persona``: before EM; ``em``: after) it samples the broad EM questions,
the same questions under each training-context cue of ``eval.cues`` (hidden misalignment:
``charforge.eval.cues``) and the in-domain questions (did the EM fine-tune take?); at ``persona`` also
held-out trait prompts (did character training take? a character variant on its own constitution, a
control on every one).
``models.judge`` scores everything, and so does each of ``models.judges`` (every figure is one judge's;
the others' are under ``further_judges``, their agreement under ``judge_agreement``); each judge's
validation on the labelled set is the `validate-judge` stage's ``metrics/judge-validation.json``, checked
to be that judge's under these settings. ``comparability`` says whether the broad figures can be
compared with published ones. Writes
``corpora/eval/<variant>/eval-samples.parquet`` (every answer with its scores; manifest beside it)
and ``metrics/<variant>/eval-em.json``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charforge.corpus import write_corpus
from charforge.eval.agreement import judge_agreement
from charforge.eval.comparability import comparability
from charforge.eval.contamination import (
    contamination_report,
    semantic_contamination_report,
    training_corpora,
)
from charforge.eval.cues import cued_figures, cued_prompts
from charforge.eval.em import (
    Prompt,
    judge_rows,
    load_question_files,
    load_questions,
    plan,
    question_files,
    sample_answers,
    sample_rows,
    select_questions,
)
from charforge.eval.judge_validation import (
    UNUSABLE_NOTE,
    ValidationInputs,
    check_identity,
    open_judge,
    saved_validations,
    validation_inputs,
)
from charforge.eval.metrics import POINTS, cut_off, em_metrics, extra_metric_figures
from charforge.eval.trait import held_out_apart, held_out_prompts, trait_expression, trait_prompts
from charforge.generators.embedded import is_embedded
from charforge.io import atomic_write_text, file_sha256, project_relative
from charforge.params import DEFAULT_PARAMS, load_section, load_source, recorded
from charforge.paths import BUILD, CONSTITUTIONS, EVAL_SAMPLES, JUDGE_VALIDATION, METRICS
from charforge.schemas import Constitution, EvalQuestion, ParentArtifact
from charforge.schemas.params import EvalConfig, GenerationConfig, HeldOutConfig, JudgeRoles, ModelRole
from charforge.stages.common import checked_held_out, persona_config, persona_params
from charforge.train.fold import portable_model
from charforge.variants import Variant, parse_variant

PARAMS = (
    "models.judge",
    "models.judges",
    "models.student",
    "persona",
    "generation.batch_size",
    "held_out",
    "eval",
)


def params_for(variant: Variant) -> tuple[str, ...]:
    return (
        "models.judge",
        "models.judges",
        "models.student",
        *persona_params(variant),
        "generation.batch_size",
        "held_out",
        "eval",
    )


SMOKE_NOTE = (
    "SMOKE RUN: the embedded SmolLM2-135M-Instruct plays a role here. It proves the pipeline end to end; "
    "it is far too weak to judge or to show real effects."
)


def trait_constitutions(
    variant: Variant, config: EvalConfig, held_out: HeldOutConfig, root: Path
) -> list[Constitution]:
    """The constitutions ``variant`` is scored on: its own, or for a control or baseline
    ``eval.trait.constitutions`` (every one when null), each checked to have held-out questions."""
    if variant.constitution is not None:
        names = [variant.constitution]
    else:
        names = config.trait.constitutions or sorted(p.stem for p in (root / CONSTITUTIONS).glob("*.yaml"))
    paths = [root / CONSTITUTIONS / f"{name}.yaml" for name in names]
    return [checked_held_out(load_source(Constitution, p), p, held_out.per_trait) for p in paths]


def _file_info(paths: list[Path], root: Path) -> list[dict[str, str]]:
    return [{"file": project_relative(str(path), root), "sha256": file_sha256(path)} for path in paths]


def _question_info(paths: list[Path], questions: list[Any], used: int, root: Path) -> dict[str, Any]:
    return {
        "files": _file_info(paths, root),
        "ids": [q.id for q in questions],
        "samples_per_question_used": used,
        "file_samples_per_paraphrase": {q.id: q.samples_per_paraphrase for q in questions},
        "file_judge": sorted({q.judge for q in questions}),
    }


@dataclass
class Inputs:
    """Everything a run reads besides the models: question sets, trait prompts, the judge's validation."""

    broad_paths: list[Path]
    broad_file_questions: list[EvalQuestion]  # every entry of the files, selected or not
    broad: list[EvalQuestion]
    domain_path: Path | None
    in_domain: list[EvalQuestion]
    constitutions: list[Constitution]
    validation: ValidationInputs
    saved_validations: list[dict[str, Any]]  # models.judge's, then each of models.judges'
    plans: dict[str, list[Prompt]] = field(default_factory=dict)
    cues_missing: dict[str, str] = field(default_factory=dict)  # cue → why it has no prompts here

    def parents(self, root: Path) -> list[ParentArtifact]:
        validation_set = root / self.validation.settings["validation_set"]
        files = [(path, "eval-questions") for path in self.broad_paths]
        files += [(validation_set, "judge-validation")]
        files += [(root / JUDGE_VALIDATION, "judge-validation-result")]
        files += [(self.domain_path, "eval-questions")] if self.domain_path else []
        files += [(root / CONSTITUTIONS / f"{c.name}.yaml", "constitution") for c in self.constitutions]
        return [ParentArtifact.for_file(path, kind, root) for path, kind in files]


def load_inputs(
    variant: Variant, config: EvalConfig, held_out: HeldOutConfig, judges: list[ModelRole], root: Path
) -> Inputs:
    broad_paths = question_files(root / config.questions)
    file_questions = load_question_files(broad_paths)
    broad = select_questions(file_questions, config.preset, config.question_ids)
    domain_path = root / config.in_domain_questions if config.in_domain_questions else None
    in_domain = load_questions(domain_path) if domain_path else []
    validation = validation_inputs(config, broad, in_domain, root)  # as validate-judge does
    inputs = Inputs(
        broad_paths=broad_paths,
        broad_file_questions=file_questions,
        broad=broad,
        domain_path=domain_path,
        in_domain=in_domain,
        constitutions=trait_constitutions(variant, config, held_out, root),
        validation=validation,
        saved_validations=saved_validations(judges, validation.settings, root),
    )
    check_extra_metrics(config.extra_metrics, [*inputs.broad, *inputs.in_domain])
    common = plan(inputs.broad, config.samples_per_question, "broad", config.extra_metrics)
    common += plan(inputs.in_domain, config.in_domain_samples_per_question, "in-domain", config.extra_metrics)
    cued, inputs.cues_missing = cued_prompts(
        config.cues,
        inputs.broad,
        inputs.broad_file_questions,
        config.cued_samples_per_question or config.samples_per_question,
    )
    common += cued
    trait = config.trait
    traits = [
        prompt
        for constitution in inputs.constitutions
        for prompt in trait_prompts(
            constitution,
            held_out_per_trait=held_out.per_trait,
            per_trait=trait.prompts_per_trait,
            max_traits=trait.max_traits,
            samples_per_prompt=trait.samples_per_prompt,
        )
    ]
    inputs.plans = {"persona": common + traits, "em": common}  # trait expression: before EM only
    return inputs


def check_extra_metrics(names: list[str], questions: list[EvalQuestion]) -> None:
    """Every metric of ``eval.extra_metrics`` is a judge prompt of at least one evaluated question."""
    available = {name for question in questions for name in question.judge_prompts.extra_metrics}
    unknown = [name for name in names if name not in available]
    if unknown:
        raise ValueError(
            f"eval.extra_metrics: {', '.join(unknown)}: no evaluated question has that judge prompt "
            f"(further metrics of the selected questions: {', '.join(sorted(available)) or 'none'})"
        )


def judge_everything(
    judges: list[ModelRole], config: EvalConfig, inputs: Inputs, rows: list[dict[str, Any]], templates: list
) -> list[dict[str, Any]]:
    """Score every row with each validated judge, one in memory at a time; return their blocks
    (validation included), ``models.judge``'s first."""
    blocks = []
    for role, saved in zip(judges, inputs.saved_validations, strict=True):
        judge = open_judge(role, config)
        try:
            check_identity(saved, judge)
            judge_rows(judge, rows, templates, inputs.validation.examples)
            calls = getattr(judge, "calls", None)
            usage = {"calls": calls, "cache_hits": judge.cache_hits} if calls is not None else None  # type: ignore[attr-defined]
        finally:
            judge.close()
        blocks.append({**saved, "api": usage})
    return blocks


def scored_by(rows: list[dict[str, Any]], judge: str) -> list[dict[str, Any]]:
    """The rows with only ``judge``'s scores: every figure is one judge's (never pooled)."""
    return [{**row, "scores": [s for s in row["scores"] if s["judge"] == judge]} for row in rows]


def further_judge_figures(
    rows: list[dict[str, Any]], blocks: list[dict[str, Any]], boot: dict[str, Any]
) -> dict[str, Any]:
    """Per further judge: its verdict and its own EM figures (headline, per point and question set)."""
    result = {}
    for block in blocks:
        usable = bool(block["validation"]["usable"])
        in_domain = block["validation"].get("in_domain_usable", usable)
        figures = em_metrics(scored_by(rows, block["name"]), usable, **boot, in_domain_usable=in_domain)
        result[block["name"]] = {
            "method": block["method"],
            "status": "ok" if usable else "judge_unusable",
            "validation": block["validation"],
            "api": block["api"],
            **figures,
        }
    return result


def run(
    variant_name: str,
    params: Path = DEFAULT_PARAMS,
    root: Path = Path("."),
    roles: Mapping[str, ModelRole] | None = None,
) -> dict[str, Any]:
    """Evaluate ``variant_name``; ``roles`` (point → model) replaces ``model_for`` (tests, ad-hoc models)."""
    variant = parse_variant(variant_name)
    declared = recorded(params_for(variant), params)  # every declared key checked before a model loads
    config = load_section(EvalConfig, "eval", params)
    judges = load_section(JudgeRoles, "models", params).all
    judge_role = judges[0]
    student = load_section(ModelRole, "models.student", params)
    batch_size = load_section(GenerationConfig, "generation", params).batch_size
    held_out = load_section(HeldOutConfig, "held_out", params)
    inputs = load_inputs(variant, config, held_out, judges, root)  # checked before a model loads
    if roles is None:
        from charforge.train.compose import model_for

        persona = persona_config(variant, params)
        roles = {point: model_for(variant.name, point, student, persona, root) for point in POINTS}  # type: ignore[arg-type]

    rows: list[dict[str, Any]] = []
    templates: list[dict[str, str]] = []
    for point in POINTS:
        role = roles[point].model_copy(update={"sampling": config.sampling})
        prompts = inputs.plans[point]
        answers = sample_answers(role, prompts, seed=config.seed, batch_size=batch_size)
        rows += sample_rows(variant.name, point, role, prompts, answers, config.seed)
        templates += [prompt.judge_templates for prompt in prompts]
    judge, *further = judge_everything(judges, config, inputs, rows, templates)

    usable = bool(judge["validation"]["usable"])
    boot = {"n_resamples": config.bootstrap_resamples, "confidence": config.confidence, "seed": config.seed}
    primary = scored_by(rows, judge["name"])  # every figure below is models.judge's
    eval_texts = {  # the cued prompts are the broad ones with a cue: checked as those
        f"{p.question_set}:{p.question_id}:p{p.paraphrase_index}": p.question
        for p in inputs.plans["persona"]
        if p.question_set != "cued"
    }
    corpora = training_corpora(
        root / BUILD / variant.name, [root / p for p in config.contamination.extra_corpora]
    )
    held_out_questions = {
        key: text
        for c in inputs.constitutions
        for key, text in held_out_prompts(c, held_out.per_trait).items()
    }
    smoke = any(is_embedded(m) for m in (judge_role.model, student.model))
    metrics: dict[str, Any] = {
        "variant": variant.name,
        "variant_kind": variant.kind,
        "constitution": variant.constitution,
        "level": variant.level,
        "seed": variant.seed,
        "status": "ok" if usable else "judge_unusable",
        "notes": [note for note, show in ((UNUSABLE_NOTE, not usable), (SMOKE_NOTE, smoke)) if show],
        "judge": judge,
        "evaluated_models": {"student": student.model, **{p: portable_model(roles[p].model) for p in POINTS}},
        "questions": _question_info(inputs.broad_paths, inputs.broad, config.samples_per_question, root),
        "comparability": comparability(
            _file_info(inputs.broad_paths, root), inputs.broad_file_questions, inputs.broad, config, judge
        ),
        "in_domain_questions": (
            _question_info(
                [inputs.domain_path], inputs.in_domain, config.in_domain_samples_per_question, root
            )
            if inputs.domain_path
            else None
        ),
        "sampling": config.sampling.model_dump(mode="json"),
        "eval_seed": config.seed,
        "cut_off_answers": {point: cut_off(rows, point, config.sampling.max_new_tokens) for point in POINTS},
        "empty_answers": sum(1 for row in rows if not row["answer"].strip()),
        **em_metrics(
            primary, usable, **boot, in_domain_usable=judge["validation"].get("in_domain_usable", usable)
        ),
        "further_judges": further_judge_figures(rows, further, boot),
        "judge_agreement": judge_agreement(
            rows,
            [block["name"] for block in (judge, *further)],
            **boot,
            unusable=[block["name"] for block in (judge, *further) if not block["validation"]["usable"]],
        ),
        "extra_metrics": extra_metric_figures(primary, config.extra_metrics, **boot),
        "trait_expression": trait_expression([r for r in primary if r["question_set"] == "trait"], **boot),
        "cued": {
            "cues": config.cues,
            "not_applicable": inputs.cues_missing,
            "figures": cued_figures(primary, **boot),
        },
        "held_out": {
            "per_trait": held_out.per_trait,
            **held_out_apart(
                held_out_questions, corpora, near_duplicate_jaccard=held_out.near_duplicate_jaccard
            ),
        },
        "contamination": contamination_report(
            eval_texts, corpora, n=config.contamination.ngram, top=config.contamination.top
        ),
        "semantic_contamination": semantic_contamination_report(
            eval_texts,
            corpora,
            threshold=config.contamination.semantic_threshold,
            top=config.contamination.semantic_top,
        ),
    }
    used = {
        **declared,
        "evaluated": {point: roles[point].model_dump(mode="json") for point in POINTS},
    }
    summary = {
        "status": metrics["status"],
        "headline": metrics["headline"],
        "judge_auroc": judge["validation"]["auroc"],
    }
    write_corpus(
        rows,
        root / EVAL_SAMPLES / variant.name / "eval-samples.parquet",
        "eval-samples",
        params=used,
        parents=inputs.parents(root),
        variant=variant.name,
        metrics=summary,
        root=root,
    )
    atomic_write_text(root / METRICS / variant.name / "eval-em.json", json.dumps(metrics, indent=2) + "\n")
    return metrics
