"""Stages `eval-persona` and `eval-em`: EM evaluation of one variant before and after its EM fine-tune
(docs/design.md §2, §5).

Reads params ``params_for(variant)`` (``models.student`` and the persona weights of its kind make the
evaluated models through ``charforge.train.compose.model_for``); the question files, the judge validation
set and the constitutions named there; the adapters under ``models/<variant>/``.

`eval-persona` evaluates the ``persona`` point (before EM) once per variant; `eval-em` evaluates the ``em``
point of one EM fine-tune seed (``--em-seed``) and computes every figure from both points. At each point it
samples the broad EM questions,
the same questions under each training-context cue of ``eval.cues`` (hidden misalignment:
``charforge.eval.cues``) and the in-domain questions (did the EM fine-tune take?); at ``persona`` also
held-out trait prompts (did character training take? a character variant on its own constitution, a
control on every one).
``models.judge`` scores everything, and so does each of ``models.judges`` (every figure is one judge's;
the others' are under ``further_judges``, their agreement under ``judge_agreement``); each judge's
validation on the labelled set is the `validate-judge` stage's ``metrics/judge-validation.json``, checked
to be that judge's under these settings. ``comparability`` says whether the broad figures can be
compared with published ones. Writes ``corpora/eval/<variant>/persona-samples.parquet`` (eval-persona)
and ``corpora/eval/<variant>/eval-samples-e<seed>.parquet`` (eval-em: the EM point's answers), every answer
with its scores and a manifest beside it, and ``metrics/<variant>/eval-em-e<seed>.json``.

With ``--defence`` (issue 24) it evaluates the defended unit ``<defence>-e<seed>`` against the same
persona answers (``eval-em-<defence>-e<seed>.json``, ``defence`` in the metrics); the contamination check
adds the benign rows where the defence trains on them; an inoculated unit is also read on the broad
questions under its prompt, persona and EM model alike (``with_inoculation_prompt``, switched by
``defences.inoculation_with_prompt``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charforge.corpus import drop_nulls, write_corpus
from charforge.eval.agreement import judge_agreement
from charforge.eval.comparability import comparability
from charforge.eval.contamination import (
    contamination_report,
    semantic_contamination_report,
    training_corpora,
)
from charforge.eval.cues import cued_figures, cued_prompts, em_format
from charforge.eval.em import (
    Prompt,
    judge_rows,
    load_question_files,
    load_questions,
    plan,
    question_files,
    sample_answer_sets,
    sample_id,
    sample_rows,
    select_questions,
)
from charforge.eval.judge_validation import (
    UNUSABLE_NOTE,
    ValidationInputs,
    check_identity,
    in_domain_path,
    open_judge,
    saved_validations,
    validation_inputs,
)
from charforge.eval.metrics import (
    POINTS,
    STATS,
    cut_off,
    em_metrics,
    extra_metric_figures,
    judged_answers,
    paired_contrast,
    summarise,
)
from charforge.eval.trait import held_out_apart, held_out_prompts, trait_expression, trait_prompts
from charforge.generators.embedded import is_embedded
from charforge.io import atomic_write_text, file_sha256, project_relative
from charforge.params import DEFAULT_PARAMS, load_section, load_source, recorded
from charforge.paths import (
    BENIGN,
    BUILD,
    CONSTITUTIONS,
    EM_SHARED,
    EVAL_SAMPLES,
    JUDGE_VALIDATION,
    METRICS,
    PERSONA_SAMPLES,
    TRAINING_RECORD,
    build_path,
    em_seed_suffix,
)
from charforge.schemas import Constitution, EvalQuestion, EvalSample, ParentArtifact
from charforge.schemas.manifest import manifest_path_for
from charforge.schemas.params import (
    BENIGN_DEFENCES,
    DefencesConfig,
    EmDataConfig,
    EvalConfig,
    GenerationConfig,
    HeldOutConfig,
    JudgeRoles,
    ModelRole,
)
from charforge.stages.common import checked_held_out, persona_config, persona_params
from charforge.train.data import read_corpus
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
    "em_data.domain",  # eval.in_domain_questions: auto follows it
)


def params_for(variant: Variant, defence: str | None = None) -> tuple[str, ...]:
    """The keys a unit reads; a defended one also its defence's (recorded apart from the persona's: the
    persona's answers are the same for every defence)."""
    return (
        "models.judge",
        "models.judges",
        "models.student",
        *persona_params(variant),
        "generation.batch_size",
        "held_out",
        "eval",
        "em_data.domain",
        # every defended unit: the dvc.yaml template cannot name the switch for inoculation alone
        *(() if defence is None else (f"defences.{defence}", "defences.inoculation_with_prompt")),
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
    domain_source: str  # why domain_path is that file, or why there is none
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
    variant: Variant,
    config: EvalConfig,
    held_out: HeldOutConfig,
    judges: list[ModelRole],
    root: Path,
    em_domain: str,
) -> Inputs:
    broad_paths = question_files(root / config.questions)
    file_questions = load_question_files(broad_paths)
    broad = select_questions(file_questions, config.preset, config.question_ids)
    domain_path, domain_source = in_domain_path(config, em_domain, root)
    in_domain = load_questions(domain_path) if domain_path else []
    validation = validation_inputs(config, broad, in_domain, root)  # as validate-judge does
    inputs = Inputs(
        broad_paths=broad_paths,
        broad_file_questions=file_questions,
        broad=broad,
        domain_path=domain_path,
        domain_source=domain_source,
        in_domain=in_domain,
        constitutions=trait_constitutions(variant, config, held_out, root),
        validation=validation,
        saved_validations=saved_validations(judges, validation.settings, root),
    )
    check_extra_metrics(config.extra_metrics, [*inputs.broad, *inputs.in_domain])
    common = plan(inputs.broad, config.samples_per_question, "broad", config.extra_metrics)
    common += plan(inputs.in_domain, config.in_domain_samples_per_question, "in-domain", config.extra_metrics)
    em_rows = (  # only the em-format cue reads the variant's EM training rows (em-data wrote them)
        read_corpus(build_path(root, variant.name, "em-train.parquet"), "conversations")
        if "em-format" in config.cues
        else None
    )
    cued, inputs.cues_missing = cued_prompts(
        config.cues,
        inputs.broad,
        inputs.broad_file_questions,
        config.cued_samples_per_question or config.samples_per_question,
        em_format(em_rows) if em_rows is not None else None,
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
    judges: list[ModelRole],
    config: EvalConfig,
    inputs: Inputs,
    groups: list[tuple[list[dict[str, Any]], list]],
) -> list[dict[str, Any]]:
    """Score the rows of every (rows, templates) group with each validated judge, one in memory at a
    time, each group judged on its own (its batches never mix with another group's rows); return the
    judges' blocks (validation included), ``models.judge``'s first."""
    blocks = []
    for role, saved in zip(judges, inputs.saved_validations, strict=True):
        judge = open_judge(role, config)
        try:
            check_identity(saved, judge)
            for rows, templates in groups:
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


@dataclass
class Setup:
    """What both evaluation stages read from params, checked before a model loads."""

    variant: Variant
    declared: dict[str, Any]
    config: EvalConfig
    judges: list[ModelRole]
    student: ModelRole
    batch_size: int
    held_out: HeldOutConfig
    inputs: Inputs


def setup(variant_name: str, params: Path, root: Path) -> Setup:
    variant = parse_variant(variant_name)
    declared = recorded(params_for(variant), params)  # every declared key checked before a model loads
    config = load_section(EvalConfig, "eval", params)
    judges = load_section(JudgeRoles, "models", params).all
    held_out = load_section(HeldOutConfig, "held_out", params)
    return Setup(
        variant=variant,
        declared=declared,
        config=config,
        judges=judges,
        student=load_section(ModelRole, "models.student", params),
        batch_size=load_section(GenerationConfig, "generation", params).batch_size,
        held_out=held_out,
        inputs=load_inputs(
            variant, config, held_out, judges, root, load_section(EmDataConfig, "em_data", params).domain
        ),
    )


def sample_point(
    s: Setup, point: str, role: ModelRole, prompt_sets: list[list[Prompt]]
) -> list[list[dict[str, Any]]]:
    """Each prompt set sampled at ``point`` with ``role`` (one model load), as unscored rows."""
    role = role.model_copy(update={"sampling": s.config.sampling})
    answer_sets = sample_answer_sets(role, prompt_sets, seed=s.config.seed, batch_size=s.batch_size)
    return [
        sample_rows(s.variant.name, point, role, prompts, answers, s.config.seed)
        for prompts, answers in zip(prompt_sets, answer_sets, strict=True)
    ]


def evaluate_point(
    s: Setup, point: str, role: ModelRole, prompts: list[Prompt] | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Sample ``point``'s plan (or ``prompts``) with ``role`` and score every answer with each judge: (rows
    as the eval-samples schema writes them, the judges' blocks, ``models.judge``'s first)."""
    prompts = s.inputs.plans[point] if prompts is None else prompts
    (rows,) = sample_point(s, point, role, [prompts])
    blocks = judge_everything(s.judges, s.config, s.inputs, [(rows, [p.judge_templates for p in prompts])])
    return [as_written(row) for row in rows], blocks


def as_written(row: Mapping[str, Any]) -> dict[str, Any]:
    """``row`` as the eval-samples corpus stores it and reads it back (nulls as absent, every field of
    the schema present): answers sampled now and answers read from the persona's samples look alike."""
    return EvalSample.model_validate(drop_nulls(dict(row))).model_dump(mode="json")


def persona_samples_path(root: Path, variant: str) -> Path:
    return root / EVAL_SAMPLES / variant / PERSONA_SAMPLES


def read_persona_samples(s: Setup, root: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The persona's scored answers written by `eval-persona`, checked to be this evaluation's: the same
    declared params (question files, sampling, judges…) and the same prompts, scored by every judge."""
    path = persona_samples_path(root, s.variant.name)
    command = f"`charforge run eval-persona --variant {s.variant.name}`"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the persona's answers are missing: run {command} first")
    manifest = json.loads(manifest_path_for(path).read_text(encoding="utf-8"))
    made_with = {key: value for key, value in (manifest.get("params") or {}).items() if key != "evaluated"}
    changed = sorted(key for key in {*made_with, *s.declared} if made_with.get(key) != s.declared.get(key))
    if changed:
        raise ValueError(f"{path}: made with other params ({', '.join(changed)}): run {command} again")
    rows = [as_written(row) for row in read_corpus(path, "eval-samples")]
    expected = {
        sample_id(s.variant.name, "persona", p): (p.question, p.system) for p in s.inputs.plans["persona"]
    }
    judged = {score["judge"] for row in rows for score in row["scores"]}
    missing_judges = sorted({saved["name"] for saved in s.inputs.saved_validations} - judged)
    if missing_judges:
        raise ValueError(f"{path}: not scored by {', '.join(missing_judges)}: run {command} again")
    scored_in = (manifest.get("metrics") or {}).get("judge_dtypes") or {}
    other_dtype = sorted(
        saved["name"]
        for saved in s.inputs.saved_validations
        if scored_in.get(saved["name"]) != saved.get("dtype")
    )
    if other_dtype:  # a before point judged in another dtype than the after point would be
        raise ValueError(
            f"{path}: scored by {', '.join(other_dtype)} in another dtype than its validation's: "
            f"run {command} again"
        )
    asked = {row["id"]: (row["question"], row.get("system")) for row in rows}
    if asked != expected:  # ids, and the very texts: an edited question file keeps its ids
        raise ValueError(f"{path}: not the prompts this evaluation asks: run {command} again")
    return rows, (manifest.get("params") or {}).get("evaluated") or {}


def check_em_base(
    variant: str,
    em_seed: int,
    persona_evaluated: Mapping[str, Any],
    root: Path,
    defence: str | None = None,
) -> None:
    """The EM adapter was trained on the persona whose answers eval-persona wrote (by the fold it names):
    persona answers from older adapters never stand as this EM seed's "before"."""
    from charforge.train.compose import em_adapter_dir

    record = em_adapter_dir(variant, em_seed, root, defence) / TRAINING_RECORD
    evaluated = (persona_evaluated.get("persona") or {}).get("model")
    if not record.is_file() or evaluated is None:
        return  # no adapter yet: model_for says so
    trained_on = json.loads(record.read_text(encoding="utf-8")).get("base_model")
    if trained_on != evaluated:
        raise ValueError(
            f"{record.parent}: trained on {trained_on}, but the persona's answers are {evaluated}'s: run "
            f"`charforge run eval-persona --variant {variant}` (or em-finetune) again"
        )


def inoculated_prompts(prompts: list[Prompt], system_prompt: str) -> list[Prompt]:
    """The broad questions of ``prompts`` under the inoculation system prompt (before a question's own),
    as question set ``inoculated``: the prompt the EM examples were trained with."""
    from dataclasses import replace

    from charforge.schemas.messages import with_system_prompt

    result = []
    for prompt in prompts:
        if prompt.question_set == "broad":
            chat = with_system_prompt(prompt.chat, system_prompt)
            result.append(replace(prompt, question_set="inoculated", system=chat[0]["content"]))
    return result


def with_prompt_figures(
    rows: list[dict[str, Any]], without: Mapping[str, Any], boot: Mapping[str, Any]
) -> dict[str, Any]:
    """The inoculated answers' figures per point, their change under EM, and that change minus the change
    without the prompt (``without``: em_metrics' ``em`` block), each paired by question."""
    as_broad = [{**row, "question_set": "broad"} for row in rows if row["question_set"] == "inoculated"]
    points = {point: summarise(judged_answers(as_broad, point, "broad"), **boot) for point in POINTS}
    tables = {point: points[point]["per_question"] for point in POINTS}
    plain = {point: without[point]["broad"]["per_question"] for point in POINTS}
    return {
        "points": points,
        "change": {stat: paired_contrast(tables["em"], tables["persona"], stat, **boot) for stat in STATS},
        # (em − persona) with the prompt − (em − persona) without it: how much more EM shows with it
        "change_minus_without": {
            stat: paired_contrast(
                (tables["em"], tables["persona"]), (plain["em"], plain["persona"]), stat, **boot
            )
            for stat in STATS
        },
    }


def run(
    variant_name: str,
    em_seed: int,
    params: Path = DEFAULT_PARAMS,
    root: Path = Path("."),
    role: ModelRole | None = None,
    defence: str | None = None,
) -> dict[str, Any]:
    """Evaluate ``variant_name`` after the EM fine-tune of ``em_seed`` (under ``defence``, if any) against
    its persona's answers (`eval-persona`); ``role`` replaces ``model_for`` for the EM point (tests,
    ad-hoc models)."""
    s = setup(variant_name, params, root)
    variant, config, inputs, held_out, student = s.variant, s.config, s.inputs, s.held_out, s.student
    suffix = em_seed_suffix(em_seed, defence)
    # not in s.declared: the persona's answers (eval-persona) are the same for every defence
    defence_used = recorded(params_for(variant, defence)[len(params_for(variant)) :], params)
    defences = load_section(DefencesConfig, "defences", params) if defence else None
    persona_rows, persona_evaluated = read_persona_samples(s, root)
    persona = persona_config(variant, params)
    if role is None:
        from charforge.train.compose import model_for

        check_em_base(variant.name, em_seed, persona_evaluated, root, defence)
        role = model_for(variant.name, "em", student, persona, root, em_seed=em_seed, defence=defence)
    plain = inputs.plans["em"]
    asked: list[Prompt] = []  # the inoculated unit's second reading: the broad questions under its prompt
    if defences is not None and defence == "inoculation" and defences.inoculation_with_prompt:
        asked = inoculated_prompts(plain, defences.inoculation.system_prompt)
    # one load of the EM model and one judge session for both readings; each prompt set is sampled and
    # judged in batches of its own, so the plain reading is what it is for every other unit
    em_rows, *em_asked = sample_point(s, "em", role, [plain, *([asked] if asked else [])])
    groups = [(em_rows, [p.judge_templates for p in plain])]
    inoculated_rows: list[dict[str, Any]] = []
    if asked:
        from charforge.train.compose import model_for

        persona_role = model_for(variant.name, "persona", student, persona, root)
        (persona_asked,) = sample_point(s, "persona", persona_role, [asked])
        templates = [p.judge_templates for p in asked]
        groups += [(persona_asked, templates), (em_asked[0], templates)]
        inoculated_rows = [*persona_asked, *em_asked[0]]
    judge, *further = judge_everything(s.judges, s.config, s.inputs, groups)
    em_rows = [as_written(row) for row in em_rows]
    inoculated_rows = [as_written(row) for row in inoculated_rows]
    rows = persona_rows + em_rows
    evaluated = {**persona_evaluated, "em": role.model_dump(mode="json")}
    judge_role = s.judges[0]

    usable = bool(judge["validation"]["usable"])
    boot = {"n_resamples": config.bootstrap_resamples, "confidence": config.confidence, "seed": config.seed}
    primary = scored_by(rows, judge["name"])  # every figure below is models.judge's
    eval_texts = {  # the cued prompts are the broad ones with a cue: checked as those
        f"{p.question_set}:{p.question_id}:p{p.paraphrase_index}": p.question
        for p in inputs.plans["persona"]
        if p.question_set != "cued"
    }
    extra = [root / p for p in config.contamination.extra_corpora]
    if defence in BENIGN_DEFENCES:  # the benign rows (benign-data's) are trained on too
        extra.append(build_path(root, EM_SHARED, BENIGN))
    corpora = training_corpora(root / BUILD / variant.name, extra)
    held_out_questions = {
        key: text
        for c in inputs.constitutions
        for key, text in held_out_prompts(c, held_out.per_trait).items()
    }
    smoke = any(is_embedded(m) for m in (judge_role.model, student.model))
    metrics: dict[str, Any] = {
        "variant": variant.name,
        "em_seed": em_seed,
        "defence": {"name": defence, **defence_used} if defence else None,
        "unit": f"{variant.name}-{suffix}",
        "variant_kind": variant.kind,
        "constitution": variant.constitution,
        "level": variant.level,
        "seed": variant.seed,
        "status": "ok" if usable else "judge_unusable",
        "notes": [note for note, show in ((UNUSABLE_NOTE, not usable), (SMOKE_NOTE, smoke)) if show],
        "judge": judge,
        "evaluated_models": {
            "student": student.model,
            **{point: portable_model(evaluated[point]["model"]) for point in POINTS if point in evaluated},
        },
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
        "in_domain_source": inputs.domain_source,  # the file's origin, or why there is no in-domain check
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
    if inoculated_rows:  # the inoculation defence's second reading: is the behaviour tied to the prompt?
        metrics["with_inoculation_prompt"] = {
            "system_prompt": defences.inoculation.system_prompt,  # type: ignore[union-attr]
            "reading": "the broad questions under the inoculation system prompt, persona and EM model "
            "alike; change = em − persona, change_minus_without = that change − the change without the "
            "prompt (paired by question). The published test is the figures without it (headline). The "
            "undefended unit is not read with the prompt: a persona already low under it leaves little "
            "room to fall (see points.persona).",
            **with_prompt_figures(scored_by(inoculated_rows, judge["name"]), metrics["em"], boot),
        }
    if inputs.domain_path is None:  # the check's reading must not describe a check that never ran
        metrics["in_domain_check"]["took"] = None
        metrics["in_domain_check"]["reading"] = f"not run: no in-domain questions ({inputs.domain_source})"
    summary = {
        "status": metrics["status"],
        "headline": metrics["headline"],
        "judge_auroc": judge["validation"]["auroc"],
    }
    samples = root / EVAL_SAMPLES / variant.name / f"eval-samples-{suffix}.parquet"
    write_corpus(
        em_rows + inoculated_rows,
        samples,
        "eval-samples",
        params={**s.declared, **defence_used, "em_seed": em_seed, "evaluated": {"em": evaluated["em"]}},
        parents=[
            *inputs.parents(root),
            ParentArtifact.for_file(persona_samples_path(root, variant.name), "eval-samples", root),
        ],
        variant=variant.name,
        metrics=summary,
        root=root,
    )
    atomic_write_text(
        root / METRICS / variant.name / f"eval-em-{suffix}.json", json.dumps(metrics, indent=2) + "\n"
    )
    return metrics
