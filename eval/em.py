"""EM evaluation: questions in the public EM YAML format, sampled answers, judge scores (docs/design.md §4–5).

Questions come from any file in the public format (anchors and aliases, ``_json`` / ``_template``
variants, an optional ``system``), selected by id patterns and a preset (``first-plot``: the plain
questions, without their ``_json`` / ``_template`` variants). The ``system`` field is sent as a
system message (a public implementation silently dropped it) and each sample records the prompt its
model actually saw after the chat template. ``samples_per_question`` answers per question are spread
round robin over its paraphrases; the file's own ``samples_per_paraphrase`` and ``judge`` are recorded,
params decide. Sampling goes through the backend factory (``build_llm``), seeded; identical chats are
sampled as one request with ``num_generations`` so every backend draws distinct samples.

Input columns: a question file (kind ``eval-questions``).

Output columns: ``EvalSample`` rows (``answer``, ``rendered_prompt``, ``output_tokens``, ``scores``).

Runtime parameters: ``eval.questions`` (a file, or a folder of them), ``eval.preset``, ``eval.question_ids``,
``eval.extra_metrics``,
``eval.samples_per_question``, ``eval.sampling``, ``eval.seed``; ``generation.batch_size``.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charforge import __version__
from charforge.eval.judge import Chat, Judge
from charforge.eval.judge_validation import judge_chat
from charforge.io import load_yaml, read_text
from charforge.schemas.evaluation import EvalQuestion, JudgeValidationItem
from charforge.schemas.params import ModelRole

VARIANT_SUFFIXES = ("_json", "_template")
GENERATOR = "charforge.eval.em"


class QuestionFileError(ValueError):
    """A question file is invalid, or a selection matched nothing; the message says where."""


def load_questions(path: Path) -> list[EvalQuestion]:
    """Every entry of a public-format question file, validated (FILE:LINE: field: problem on error)."""
    from charforge.validate import validate_file

    report = validate_file(path, "eval-questions")
    if not report.valid:
        raise QuestionFileError("\n".join(map(str, report.problems)))
    document, _ = load_yaml(read_text(path))
    return [EvalQuestion.model_validate(entry) for entry in document.data]


QUESTION_FILE_SUFFIXES = (".yaml", ".yml", ".json")


def question_files(path: Path) -> list[Path]:
    """``path`` itself, or for a folder the question files directly in it (sorted by name)."""
    if not path.is_dir():
        return [path]
    files = sorted(
        child
        for child in path.iterdir()
        if child.is_file() and child.suffix.lower() in QUESTION_FILE_SUFFIXES
    )
    if not files:
        raise QuestionFileError(
            f"{path}: no question file ({', '.join(QUESTION_FILE_SUFFIXES)}) in this folder"
        )
    return files


def load_question_files(paths: Sequence[Path]) -> list[EvalQuestion]:
    """Every entry of every file, in order; an id in two files is an error (samples are keyed by id)."""
    questions: list[EvalQuestion] = []
    origin: dict[str, Path] = {}
    for path in paths:
        for question in load_questions(path):
            if question.id in origin:
                raise QuestionFileError(
                    f"{path}: id {question.id!r} is also in {origin[question.id]}; "
                    "ids must be unique across the files of eval.questions"
                )
            origin[question.id] = path
            questions.append(question)
    return questions


def select_questions(
    questions: Sequence[EvalQuestion], preset: str, patterns: Sequence[str]
) -> list[EvalQuestion]:
    """Questions whose id matches any pattern (fnmatch); ``first-plot`` drops the format variants."""
    chosen = [q for q in questions if any(fnmatch.fnmatchcase(q.id, pattern) for pattern in patterns)]
    if preset == "first-plot":
        chosen = [q for q in chosen if not q.id.endswith(VARIANT_SUFFIXES)]
    if not chosen:
        raise QuestionFileError(f"no question matches preset {preset!r} and ids {list(patterns)}")
    return chosen


def question_chat(question: str, system: str | None) -> Chat:
    chat: Chat = [{"role": "system", "content": system}] if system else []
    return [*chat, {"role": "user", "content": question}]


@dataclass(frozen=True)
class Prompt:
    """One answer to sample: which question, paraphrase and sample, and the chat sent."""

    question_set: str
    question_id: str
    paraphrase_index: int
    sample_index: int
    question: str
    system: str | None
    judge_templates: dict[str, str]
    cue: str | None = None  # question set `cued`: which training-context cue wraps the question

    @property
    def chat(self) -> Chat:
        return question_chat(self.question, self.system)


def plan(
    questions: Sequence[EvalQuestion], per_question: int, question_set: str, extra_metrics: Sequence[str] = ()
) -> list[Prompt]:
    """``per_question`` prompts per question, paraphrases taken round robin; each is judged on
    ``aligned``, ``coherent`` and the ``extra_metrics`` its question has."""
    prompts = []
    for question in questions:
        further = [name for name in extra_metrics if name in question.judge_prompts.extra_metrics]
        templates = question.judge_prompts.templates(further)
        for sample in range(per_question):
            index = sample % len(question.paraphrases)
            prompts.append(
                Prompt(
                    question_set,
                    question.id,
                    index,
                    sample,
                    question.paraphrases[index],
                    question.system,
                    templates,
                )
            )
    return prompts


@dataclass(frozen=True)
class Answer:
    text: str
    rendered_prompt: str | None
    output_tokens: int | None
    finish_reason: str | None = None  # "length": cut off by max_new_tokens (where the backend says)


def sample_answers(
    role: ModelRole, prompts: Sequence[Prompt], *, seed: int, batch_size: int = 8
) -> list[Answer]:
    """One answer per prompt from ``role`` (sampling from ``role.sampling``), in prompt order."""
    return sample_answer_sets(role, [prompts], seed=seed, batch_size=batch_size)[0]


def sample_answer_sets(
    role: ModelRole, prompt_sets: Sequence[Sequence[Prompt]], *, seed: int, batch_size: int = 8
) -> list[list[Answer]]:
    """``sample_answers`` of each set with one load of the model: every set is batched on its own, and
    the local backends seed each batch from its content, so on transformers a set's answers are those it
    gets alone (its prefix cache reuses an exact prefix only, computed alike either way). vLLM's prefix
    cache may serve a later set blocks computed in an earlier one: the same text up to rounding."""
    from charforge.generators.llm import build_llm

    llm = build_llm(role, seed=seed)
    llm.load()
    try:
        return [_sample_loaded(llm, role, prompts, batch_size) for prompts in prompt_sets]
    finally:
        llm.unload()


def _sample_loaded(llm: Any, role: ModelRole, prompts: Sequence[Prompt], batch_size: int) -> list[Answer]:
    groups: dict[tuple[str | None, str], list[int]] = {}
    for index, prompt in enumerate(prompts):
        groups.setdefault((prompt.system, prompt.question), []).append(index)
    by_count: dict[int, list[list[int]]] = {}
    for members in groups.values():
        by_count.setdefault(len(members), []).append(members)
    answers: list[Answer | None] = [None] * len(prompts)
    for count, member_lists in sorted(by_count.items()):
        for start in range(0, len(member_lists), batch_size):
            batch = member_lists[start : start + batch_size]
            chats = [prompts[members[0]].chat for members in batch]
            outputs = llm.generate(inputs=chats, num_generations=count, **llm.generation_kwargs)
            for members, chat, output in zip(batch, chats, outputs, strict=True):
                rendered = _rendered(llm, role, chat)
                statistics = output.get("statistics") or {}
                tokens = _per_generation(statistics.get("output_tokens"), count)
                reasons = _per_generation(statistics.get("finish_reason"), count)
                for slot, index in enumerate(members):
                    text = output["generations"][slot] or ""
                    answers[index] = Answer(text, rendered, tokens[slot], reasons[slot])
    return [answer for answer in answers if answer is not None]


def _per_generation(values: Any, count: int) -> list[Any]:
    """A per-generation statistic as a list of ``count``; all None unless the backend gave exactly one
    per generation (an OpenAI-compatible server reports one token total for all ``n`` choices)."""
    return list(values) if isinstance(values, list) and len(values) == count else [None] * count


def _rendered(llm: Any, role: ModelRole, chat: Chat) -> str | None:
    """The prompt text the backend feeds the model (None where a server renders it)."""
    if role.backend == "openai" or not hasattr(llm, "prepare_input"):
        return None
    rendered = llm.prepare_input(chat)
    return rendered if isinstance(rendered, str) else None


def sample_id(variant: str, point: str, prompt: Prompt) -> str:
    where = f"{prompt.question_id}.p{prompt.paraphrase_index}.s{prompt.sample_index}"
    question_set = prompt.question_set + (f"-{prompt.cue}" if prompt.cue else "")
    text = f"{variant}.{point}.{question_set}.{where}"
    if len(text) <= 128:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]  # ids stay within the RecordId limit
    return f"{variant}.{point}.{question_set}.{digest}.s{prompt.sample_index}"[:128]


def sample_rows(
    variant: str, point: str, role: ModelRole, prompts: Sequence[Prompt], answers: Sequence[Answer], seed: int
) -> list[dict[str, Any]]:
    """EvalSample rows (without scores yet) for sampled answers. A folded model is named by its fold key
    (``fold:<key>``), not by its folder in this checkout's cache."""
    from charforge.generators.llm import generation_dtype
    from charforge.train.fold import portable_model

    model = portable_model(role.model)
    provenance = {
        "generator": GENERATOR,
        "tool_version": __version__,
        "models": {"evaluated": model},
        "sampling": {"evaluated": role.sampling.model_dump(mode="json")},
        "generation_dtype": {"evaluated": dtype} if (dtype := generation_dtype(role)) else {},
        "seed": seed,
    }
    return [
        {
            "id": sample_id(variant, point, prompt),
            "variant": variant,
            "question_id": prompt.question_id,
            "paraphrase_index": prompt.paraphrase_index,
            "sample_index": prompt.sample_index,
            "system": prompt.system,
            "question": prompt.question,
            "answer": answer.text,
            "model": model,
            "provenance": {**provenance, "models": dict(provenance["models"])},
            "point": point,
            "question_set": prompt.question_set,
            "cue": prompt.cue,
            "rendered_prompt": answer.rendered_prompt,
            "output_tokens": answer.output_tokens,
            "finish_reason": answer.finish_reason,
            "scores": [],
        }
        for prompt, answer in zip(prompts, answers, strict=True)
    ]


def judge_rows(
    judge: Judge,
    rows: list[dict[str, Any]],
    templates: Sequence[dict[str, str]],
    examples: Sequence[JudgeValidationItem] = (),
) -> None:
    """Score every row on every metric of its templates; append JudgeScore dicts to ``row["scores"]``."""
    jobs: list[tuple[int, str, Chat]] = []
    for index, (row, metric_templates) in enumerate(zip(rows, templates, strict=True)):
        for metric, template in metric_templates.items():
            # few-shot examples are alignment-labelled: they only fit the aligned metric
            shots = examples if metric == "aligned" else ()
            jobs.append((index, metric, judge_chat(template, row["question"], row["answer"], shots)))
    verdicts = judge.judge([chat for _, _, chat in jobs])
    for (index, metric, _), verdict in zip(jobs, verdicts, strict=True):
        row = rows[index]
        row["scores"].append(
            {
                "sample_id": row["id"],
                "variant": row["variant"],
                "metric": metric,
                "judge": judge.name,
                "method": judge.method,
                "score": verdict.score,
                "number_mass": verdict.number_mass,
                "unscored_reason": verdict.unscored_reason,
                "refusal_mass": verdict.refusal_mass,
                "code_mass": verdict.code_mass,
            }
        )
        models = row["provenance"]["models"]
        if models.setdefault("judge", judge.name) != judge.name:  # models.judge first, then judge.2, judge.3…
            judges = [value for key, value in models.items() if key.startswith("judge")]
            if judge.name not in judges:
                models[f"judge.{len(judges) + 1}"] = judge.name
