"""Stage `control-data`: the SFT corpus of a ``plain-lora`` or ``hhh`` control variant, matched in
training tokens to the reference character variant named in params (docs/design.md §1, H2).

Reads: params ``PARAMS``; the reference's ``prompts.parquet`` and its training corpora
(``controls.reference_corpora``, by default pairs and introspection); ``models/roles/{teacher,student}.json``.
Writes: ``corpora/build/<variant>/control.parquet`` with its manifest (token totals of both sides, ratio,
tolerance) and ``metrics/<variant>/control-data.json``.
"""

from __future__ import annotations

from pathlib import Path

from charforge.params import DEFAULT_PARAMS, load_section, recorded
from charforge.paths import build_path
from charforge.schemas import Manifest
from charforge.schemas.params import ControlsConfig, GenerationConfig, ModelRole
from charforge.stages.common import parent, read_input, write_stage_corpus
from charforge.variants import VariantError, character_variant, parse_variant

STAGE = "control-data"
PARAMS = ("models.teacher", "models.student", "generation", "controls")


def run(variant_name: str, params: Path = DEFAULT_PARAMS, root: Path = Path(".")) -> Manifest:
    from charforge.generators.chat import GenerationRun, model_card, rendered_prompt, with_max_new_tokens
    from charforge.generators.controls import control_corpus
    from charforge.generators.llm import resolve_model
    from charforge.train.tokens import corpus_tokens, load_tokenizer, rows_tokens

    variant = parse_variant(variant_name)
    if variant.kind not in ("plain-lora", "hhh"):
        raise VariantError(f"{variant_name!r}: control-data makes the plain-lora and hhh controls only")
    teacher_role = load_section(ModelRole, "models.teacher", params)
    student = load_section(ModelRole, "models.student", params)
    generation = load_section(GenerationConfig, "generation", params)
    config = load_section(ControlsConfig, "controls", params)
    reference = character_variant(config.reference)
    prompts_path = build_path(root, reference.name, "prompts.parquet")
    prompts = read_input(prompts_path, "prompts")
    tokenizer = load_tokenizer(resolve_model(student))
    per_corpus = {}
    for name in config.reference_corpora:
        path = build_path(root, reference.name, name)
        read_input(path, "pairs" if "pairs" in name else "conversations")  # validated before it is counted
        per_corpus[name] = corpus_tokens(tokenizer, path)
    target = sum(per_corpus.values())
    pairs = build_path(root, reference.name, "pairs.parquet")
    tokens_per_answer = None
    if pairs.is_file():  # an answered prompt costs about what a pair's prompt + chosen does
        sides = [{"messages": [*row["prompt"], *row["chosen"]]} for row in read_input(pairs, "pairs")]
        tokens_per_answer = sum(rows_tokens(tokenizer, sides)) / len(sides)

    result = control_corpus(
        variant.kind,  # type: ignore[arg-type]
        prompts,
        reference.name,
        target,
        lambda rows: rows_tokens(tokenizer, rows),
        config,
        teacher_role,
        GenerationRun(variant.name, variant.seed, generation),
        tokens_per_answer=tokens_per_answer,
    )
    teacher = with_max_new_tokens(teacher_role, config.max_new_tokens)
    card = model_card(teacher)
    tokens = {
        "total": result.tokens,
        "rows": len(result.rows),
        "tokenizer": student.model,
        "reference": {"variant": reference.name, "total": target, "per_corpus": per_corpus},
        "ratio_to_reference": round(result.tokens / target, 4),
        "tolerance": config.token_tolerance,
    }
    metrics = {
        "input_rows": result.answers,
        "answer_passes": result.rounds,
        "kept_trimmed_cut_off": result.trimmed,
        "tokens_per_answer_estimate": tokens_per_answer,
        "tokens": tokens,
        "teacher": card,
        "teacher_licence": card["licence"],
        "rendered_prompts": {"teacher": rendered_prompt(teacher, result.examples[0])},
    }
    used = {
        **recorded(PARAMS, params),
        "variant": {"kind": variant.kind, "seed": variant.seed},
        "resolved": {"teacher": teacher.model_dump(mode="json")},  # with the controls' answer limit
    }
    parents = [parent(prompts_path, "prompts")] + [
        parent(build_path(root, reference.name, name), "reference-corpus")
        for name in config.reference_corpora
    ]
    return write_stage_corpus(
        STAGE,
        root,
        variant.name,
        "control.parquet",
        "conversations",
        result,
        params=used,
        parents=parents,
        metrics=metrics,
    )
