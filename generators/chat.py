"""Answering chats with one model role: the generation core of the distill, introspect, control and EM
data stages, plus what their manifests record about the model (name, licence, rendered prompt).

Input columns: ``row`` (the chat's index), ``messages`` (the chat the model answers).

Output columns: ``generation`` (one text per sample), ``distilabel_metadata`` (per sample statistics:
``finish_reason`` where the backend reports it, else ``output_tokens``).

Runtime parameters: the role's backend and sampling; ``generation`` (runner, batch size, seed), with
the variant's seed and the cache folder, in the stage's ``GenerationRun``.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from charforge import __version__
from charforge.generators.embedded import is_embedded, lookup
from charforge.generators.llm import build_llm, generation_attention, generation_dtype, resolve_model
from charforge.generators.pipeline import charforge_pipeline, run_for_rows
from charforge.generators.text import collapse_whitespace, is_cut_off, trim_to_sentence
from charforge.schemas.params import GenerationConfig, ModelRole

Chat = list[dict[str, str]]
STEP = "answer"
PLACEHOLDER = "{prompt}"


class CorpusShortfall(RuntimeError):
    """Too few rows survived the filters; nothing was written."""

    def __init__(self, what: str, kept: int, needed: int, rejected: Counter[str]) -> None:
        reasons = ", ".join(f"{reason} {count}" for reason, count in rejected.most_common()) or "none"
        super().__init__(
            f"{what}: only {kept} row(s) left after the filters, {needed} needed; rejected: {reasons}"
        )
        self.kept, self.needed, self.rejected = kept, needed, rejected


@dataclass(frozen=True)
class GenerationRun:
    """The plumbing every generation call of one stage run shares: the variant the rows belong to, its
    seed, the ``generation`` section (runner, batch size, base seed) and the distilabel cache folder
    (None: the project's). Plumbing only, never a setting of a params section the stage did not declare:
    the stage's own section and its model roles stay explicit arguments.

    ``provenance`` is what every row of the run records about how it was made; a generator sets it with
    ``recorded_as`` once its roles are resolved (empty until then).
    """

    variant: str
    seed: int
    generation: GenerationConfig
    cache: Path | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def sampling_seed(self) -> int:
        """The seed the models sample with: ``generation.seed`` plus the variant's seed."""
        return self.generation.seed + self.seed

    def recorded_as(
        self,
        generator: str,
        roles: Mapping[str, ModelRole],
        names: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> GenerationRun:
        """This run with the provenance its rows record: the ``generator`` module, charforge's version,
        each role's model (or its name in ``names``: a folded model's folder is a cache path), sampling
        and resolved generation dtype, ``extra`` (e.g. the constitution's hash) and the run's seed."""
        names = names or {}
        provenance = {
            "generator": generator,
            "tool_version": __version__,
            "models": {name: names.get(name, role.model) for name, role in roles.items()},
            "sampling": {name: role.sampling.model_dump() for name, role in roles.items()},
            "generation_dtype": {
                name: dtype for name, role in roles.items() if (dtype := generation_dtype(role)) is not None
            },
            **extra,
            "seed": self.seed,
        }
        return replace(self, provenance=provenance)


@dataclass(frozen=True)
class Answer:
    """One sampled answer. ``cut_off``: generation stopped at the token limit, not at an end token;
    ``failed``: the backend returned no text at all (a failed request); ``trimmed``: it was cut off and
    is kept trimmed to its last complete sentence (``output_tokens`` counts what was generated)."""

    text: str
    cut_off: bool
    output_tokens: int | None = None
    failed: bool = False
    trimmed: bool = False


def trimmed_if_cut_off(answer: Answer) -> Answer:
    """A cut-off answer trimmed to its last complete sentence, or ``answer`` itself where it was not cut
    off or no sentence of some length is left (then it stays cut off, and the filters drop it)."""
    if not answer.cut_off:
        return answer
    text = trim_to_sentence(answer.text)
    if text is None:
        return answer
    return Answer(text, cut_off=False, output_tokens=answer.output_tokens, trimmed=True)


def answer_problem(answer: Answer, max_chars: int) -> str | None:
    """Why an answer cannot be trained on (failed, empty, cut off, too long), or None."""
    if answer.failed:
        return "generation_failed"
    if not answer.text.strip():
        return "empty"
    if answer.cut_off:
        return "cut_off"
    if len(answer.text) > max_chars:
        return "too_long"
    return None


def kept_samples(
    samples: Sequence[Answer], max_chars: int, rejected: Counter[str], prefix: str
) -> list[tuple[int, Answer]]:
    """The samples of one prompt that can be trained on, with their index: those with a problem
    (``answer_problem``) or repeating an earlier sample are counted in ``rejected`` as
    ``<prefix>.<reason>`` instead."""
    kept, seen = [], set()
    for index, answer in enumerate(samples):
        reason = answer_problem(answer, max_chars)
        if reason is None and collapse_whitespace(answer.text) in seen:
            reason = "duplicate"
        if reason:
            rejected[f"{prefix}.{reason}"] += 1
            continue
        seen.add(collapse_whitespace(answer.text))
        kept.append((index, answer))
    return kept


def answer_chats(
    chats: Sequence[Chat],
    role: ModelRole,
    run: GenerationRun,
    pipeline_name: str,
    *,
    samples: int = 1,
    trim_cut_off: bool = False,
) -> list[list[Answer]]:
    """``samples`` answers to every chat, in chat order, from one distilabel pipeline (cached, so a
    stage killed midway resumes; a cached run that lost rows reruns once, see ``run_for_rows``). The
    model samples with ``run.sampling_seed``; ``run.generation`` sets the runner and batch size.

    Samples come from one request per chat (``num_generations``), so they differ even though the
    backends seed sampling from the request's content. OpenAI-compatible servers count the tokens of
    all ``n`` choices together, which would hide a cut-off: there each sample is its own request.
    ``trim_cut_off``: a cut-off answer comes back trimmed to its last complete sentence (``trimmed``).
    """
    from distilabel.steps import LoadDataFromDicts
    from distilabel.steps.tasks import ChatGeneration

    if not chats:
        return []
    generation, seed = run.generation, run.sampling_seed
    per_request = 1 if role.backend == "openai" else samples
    copies = samples // per_request
    rows = [
        {"row": index, "copy": copy, "messages": chat}
        for index, chat in enumerate(chats)
        for copy in range(copies)
    ]
    # the content in the name: a cached run of other chats, model or sampling is never reused,
    # and the resolved generation dtype and attention kernel: `auto` is bf16 on one machine and fp32 on
    # another, and the kernels round differently
    numerics = [generation_dtype(role), generation_attention(role)]
    content = json.dumps([rows, role.model_dump(mode="json"), *numerics, seed, samples], sort_keys=True)
    name = f"{pipeline_name}-{hashlib.sha256(content.encode()).hexdigest()[:12]}"
    with charforge_pipeline(name, cache=run.cache) as pipeline:
        load = LoadDataFromDicts(data=rows, batch_size=generation.batch_size)
        answer = ChatGeneration(
            name=STEP,
            llm=build_llm(role, seed=seed),
            input_batch_size=generation.batch_size,
            num_generations=per_request,
            group_generations=True,
        )
        load >> answer
    keys = [(row["row"], row["copy"]) for row in rows]
    outputs = run_for_rows(pipeline, generation, lambda row: (row["row"], row["copy"]), keys)
    limit = role.sampling.max_new_tokens
    found: dict[tuple[int, int], list[Answer]] = {}
    for request, row in outputs.items():
        texts = row.get("generation") or [None] * per_request
        metadata = row.get("distilabel_metadata")
        if not isinstance(metadata, list) or len(metadata) != len(texts):  # a failed batch has none
            metadata = [{}] * len(texts)
        answers = []
        for text, meta in zip(texts, metadata, strict=True):
            stats = (meta or {}).get(f"statistics_{STEP}") or {}
            answer = Answer(
                text=text or "",
                cut_off=text is not None and is_cut_off(stats, limit),
                output_tokens=stats.get("output_tokens"),
                failed=text is None,
            )
            answers.append(trimmed_if_cut_off(answer) if trim_cut_off else answer)
        found[request] = answers  # type: ignore[index]
    return [
        [answer for copy in range(copies) for answer in found[(index, copy)]] for index in range(len(chats))
    ]


def with_max_new_tokens(role: ModelRole, max_new_tokens: int | None) -> ModelRole:
    """``role`` with its token limit replaced (a stage's own limit), or unchanged for None."""
    if max_new_tokens is None:
        return role
    sampling = role.sampling.model_copy(update={"max_new_tokens": max_new_tokens})
    return role.model_copy(update={"sampling": sampling})


def model_card(role: ModelRole) -> dict[str, str]:
    """The model's name, backend, licence, resolved generation dtype and attention kernel (local
    backends), for the manifest and the dataset card. The licence comes from the embedded model's
    registry or the ``license:`` of the model card (README.md) beside the weights; "unknown" when
    neither says."""
    licence = "unknown"
    if is_embedded(role.model):
        licence = lookup(role.model).licence
    elif role.backend != "openai":
        readme = _local_readme(role.model)
        if readme is not None:
            licence = _card_licence(readme) or licence
    card: dict[str, str] = {"model": role.model, "backend": role.backend, "licence": licence}
    if (dtype := generation_dtype(role)) is not None:
        card["generation_dtype"] = dtype
    if (attention := generation_attention(role)) is not None:
        card["generation_attention"] = attention
    return card


def _local_readme(model: str) -> Path | None:
    path = Path(model)
    if path.exists():
        readme = (path if path.is_dir() else path.parent) / "README.md"
        return readme if readme.is_file() else None
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "README.md")
    except Exception:  # not a hub id either: nothing to read
        return None
    return Path(cached) if isinstance(cached, str) else None


def _card_licence(readme: Path) -> str | None:
    import yaml

    text = readme.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return None
    front = text.split("---", 2)[1] if text.count("---") >= 2 else ""
    try:
        data = yaml.safe_load(front)
    except yaml.YAMLError:
        return None
    licence = data.get("license") if isinstance(data, dict) else None
    return str(licence) if licence else None


def rendered_prompt(role: ModelRole, chat: Chat) -> dict[str, Any]:
    """What the model is shown for ``chat`` after its chat template, with the last user turn's text
    replaced by ``{prompt}``: every row's prompt is this frame with its own text put in.

    The template may add text nobody wrote, such as a default system prompt when the chat has none
    (SmolLM2 and Qwen2.5 do; docs/design.md §7), so "no system prompt" is recorded as what the model saw.
    OpenAI-compatible servers and llama.cpp render with a template this process cannot see.
    """
    if role.backend in {"openai", "llamacpp"}:
        return {"model": role.model, "rendered_by": f"the {role.backend} backend (template not visible here)"}
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(role))
    frame = [dict(message) for message in chat]
    frame[-1]["content"] = PLACEHOLDER
    template = tokenizer.chat_template or ""
    text = tokenizer.apply_chat_template(frame, tokenize=False, add_generation_prompt=True)
    before = text.split(PLACEHOLDER, 1)[0]
    written = "".join(message["content"] for message in frame if message["role"] == "system")
    return {
        "model": role.model,
        "chat_template_sha256": hashlib.sha256(template.encode("utf-8")).hexdigest(),
        "rendered": text,
        # a system turn the chat did not have (a heuristic on the text before the prompt)
        "template_inserted_system_prompt": not written and "system" in before.lower(),
    }
