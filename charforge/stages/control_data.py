"""Stage `control-data`: the two SFT corpora of a ``plain-lora`` or ``hhh`` control variant, one per
adapter slot of the character arm, each matched in training tokens to its counterpart of the
reference character variant (docs/design.md §1, H2).

The reference is the first of ``controls.reference``. ``control-dpo-slot.parquet`` is matched to its
``pairs.parquet`` (counted as DPO trains them: prompt + chosen and prompt + rejected, each truncated at
``train_dpo.trainer.max_length``), ``control.parquet`` to its ``introspection.parquet`` (truncated at
``train_sft.trainer.max_length``). The control's rows count at the max length of the slot's trainer,
as its reference does: ``train-dpo-slot`` trains with ``train_dpo.trainer``'s settings, the control's
``train-sft`` with ``train_sft``'s. A trainer section that leaves ``max_length`` out gets TRL's
default, as the training stages do.

With ``introspection.em_reflection_prompts`` on, ``control.parquet`` also holds the teacher's answers,
in the control's own way, to the EM-targeted reflection prompts of ``corpora/introspection.yaml``
(``introspection.samples_per_prompt`` each, the first ``max_reflection_prompts``), as a character
arm's introspection does; they count towards the matched tokens.

Reads: params ``PARAMS``; the reference's ``prompts.parquet``, ``pairs.parquet`` and
``introspection.parquet``; ``corpora/introspection.yaml`` (with the EM-targeted prompts on);
``models/roles/{teacher,student}.json``.
Writes: ``corpora/build/<variant>/control-dpo-slot.parquet`` and ``control.parquet``, each with its
manifest (tokens after and before truncation, the reference's figures, ratio, tolerance), and
``metrics/<variant>/control-data.json`` (the same per corpus).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from charforge.io import load_yaml, read_text
from charforge.params import DEFAULT_PARAMS, load_section, load_source, params_error, recorded
from charforge.paths import INTROSPECTION_PROMPTS, build_path
from charforge.schemas import Manifest
from charforge.schemas.introspection import IntrospectionPrompts
from charforge.schemas.messages import EM_TARGETED_REFLECTION_SOURCE
from charforge.schemas.params import ControlsConfig, GenerationConfig, IntrospectionConfig, ModelRole
from charforge.stages.common import parent, read_input, write_stage_metrics
from charforge.variants import VariantError, character_variant, parse_variant

STAGE = "control-data"
MAX_LENGTHS = ("train_dpo.trainer.max_length", "train_sft.trainer.max_length")
# The EM-targeted reflection prompts, when a grid switches them on for every arm (issue 19): a control
# answers them in its own way, K samples each, as a character arm's introspection does.
EM_REFLECTION = (
    "introspection.em_reflection_prompts",
    "introspection.samples_per_prompt",
    "introspection.max_reflection_prompts",
)
PARAMS = ("models.teacher", "models.student", "generation", "controls", *EM_REFLECTION, *MAX_LENGTHS)


def trainer_max_length(params: Path, key: str, default: int) -> int | None:
    """``<key>.trainer.max_length`` as the trainer applies it: ``default`` (TRL's) where params leave it
    out, None (no truncation) where it is null; anything else but a positive integer is an error."""
    document, _ = load_yaml(read_text(params))
    data: Any = document.data
    for part in (key, "trainer"):
        data = data.get(part) if isinstance(data, dict) else None
    if not isinstance(data, dict) or "max_length" not in data:
        return default
    value = data["max_length"]
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise params_error(
            params,
            (key, "trainer", "max_length"),
            f"must be a positive number of tokens or null, not {value!r}",
        )
    return value


def run(variant_name: str, params: Path = DEFAULT_PARAMS, root: Path = Path(".")) -> Manifest:
    """Write both corpora; returns the manifest of ``control.parquet`` (the SFT slot's)."""
    from charforge.corpus import write_corpus
    from charforge.generators.chat import GenerationRun, model_card, rendered_prompt, with_max_new_tokens
    from charforge.generators.controls import CONTROL_SLOTS, answered_in_full, control_corpus
    from charforge.generators.llm import resolve_model
    from charforge.train.data import DPO_DEFAULT_MAX_LENGTH, SFT_DEFAULT_MAX_LENGTH
    from charforge.train.tokens import corpus_token_total, load_tokenizer, rows_sequences, sequences_total

    variant = parse_variant(variant_name)
    if variant.kind not in ("plain-lora", "hhh"):
        raise VariantError(f"{variant_name!r}: control-data makes the plain-lora and hhh controls only")
    teacher_role = load_section(ModelRole, "models.teacher", params)
    student = load_section(ModelRole, "models.student", params)
    generation = load_section(GenerationConfig, "generation", params)
    config = load_section(ControlsConfig, "controls", params)
    introspection = load_section(IntrospectionConfig, "introspection", params)
    em_prompts: list[dict[str, Any]] = []
    if introspection.em_reflection_prompts:
        listed = load_source(IntrospectionPrompts, root / INTROSPECTION_PROMPTS).em_reflection
        if not listed:
            raise ValueError(
                f"introspection.em_reflection_prompts is on but {INTROSPECTION_PROMPTS} lists no "
                "em_reflection prompts"
            )
        chosen = listed[: introspection.max_reflection_prompts or len(listed)]
        em_prompts = [
            {
                "id": f"{EM_TARGETED_REFLECTION_SOURCE}.{item.id}",
                "prompt": [{"role": "user", "content": item.prompt}],
            }
            for item in chosen
        ]
    # every listed reference must name a character variant, the contrasts too (the report reads them)
    reference, *_ = [character_variant(name) for name in config.references]
    max_length = {
        "train_dpo": trainer_max_length(params, "train_dpo", DPO_DEFAULT_MAX_LENGTH),
        "train_sft": trainer_max_length(params, "train_sft", SFT_DEFAULT_MAX_LENGTH),
    }
    prompts_path = build_path(root, reference.name, "prompts.parquet")
    prompts = read_input(prompts_path, "prompts")
    tokenizer = load_tokenizer(resolve_model(student))
    pairs = read_input(build_path(root, reference.name, "pairs.parquet"), "pairs")
    # an answered prompt costs about what a pair's prompt + chosen does (an estimate to size the passes)
    answered = sequences_total(
        rows_sequences(tokenizer, [{"messages": [*row["prompt"], *row["chosen"]]} for row in pairs]),
        max_length["train_sft"],
    )
    tokens_per_answer = answered.trained / len(pairs)

    teacher = with_max_new_tokens(teacher_role, config.max_new_tokens)
    card = model_card(teacher)
    used = {
        **recorded(PARAMS[: -len(MAX_LENGTHS)], params),
        # as applied: TRL's default where params leave max_length out
        **{key: max_length[key.split(".")[0]] for key in MAX_LENGTHS},
        "variant": {"kind": variant.kind, "seed": variant.seed},
        "resolved": {"teacher": teacher.model_dump(mode="json")},  # with the controls' answer limit
    }
    run_settings = GenerationRun(variant.name, variant.seed, generation)
    seen: set[tuple[str, str]] = set()  # answers drawn for either corpus: none is used in both
    per_corpus: dict[str, dict[str, Any]] = {}
    manifest: Manifest | None = None
    made: list[tuple[Any, Any, list[Any], dict[str, Any]]] = []  # per slot: its corpus, not yet written
    for slot in CONTROL_SLOTS:
        reference_path = build_path(root, reference.name, slot.reference_corpus)
        read_input(reference_path, slot.reference_kind)  # validated before it is counted
        # the slot's trainer truncates the reference corpus and the control's rows alike
        control_max = max_length[slot.reference_trainer]
        reference_total = corpus_token_total(tokenizer, reference_path, control_max)
        untruncated: dict[str, list[int]] = {}

        def count(
            rows: list[dict[str, Any]],
            untruncated: dict[str, list[int]] = untruncated,
            control_max: int | None = control_max,
        ) -> list[int]:
            sequences = rows_sequences(tokenizer, rows)
            untruncated.update((row["id"], counts) for row, counts in zip(rows, sequences, strict=True))
            return [sequences_total([counts], control_max).trained for counts in sequences]

        fixed = None
        if slot.name == "sft" and em_prompts:  # trained on in full; the matched rows fill the rest
            fixed = answered_in_full(
                variant.kind,  # type: ignore[arg-type]
                em_prompts,
                introspection.samples_per_prompt,
                config,
                teacher_role,
                run_settings,
                EM_TARGETED_REFLECTION_SOURCE,
            )
        fixed_tokens = sum(count(fixed.rows)) if fixed else 0
        if fixed_tokens >= reference_total.trained:
            raise ValueError(
                f"{variant.name}: the EM-targeted reflection answers alone hold {fixed_tokens:,} tokens, "
                f"more than {reference.name}'s {slot.reference_corpus} ({reference_total.trained:,}) that "
                f"{slot.corpus} is matched to: lower introspection.samples_per_prompt"
            )
        result = control_corpus(
            variant.kind,  # type: ignore[arg-type]
            prompts,
            reference.name,
            reference_total.trained - fixed_tokens,
            count,
            config,
            teacher_role,
            run_settings,
            tokens_per_answer=tokens_per_answer,
            slot=slot,
            seen=seen,
        )
        parents = [parent(prompts_path, "prompts"), parent(reference_path, "reference-corpus")]
        if fixed:
            result.rows = fixed.rows + result.rows
            result.rejected.update(fixed.rejected)
            result.answers += fixed.answers
            result.trimmed += fixed.trimmed
            parents.append(parent(root / INTROSPECTION_PROMPTS, "introspection"))
        total = sequences_total((untruncated[row["id"]] for row in result.rows), control_max)
        tokens = {
            "total": total.trained,  # after truncation, as the trainer sees it
            "untruncated": total.untruncated,
            "truncated_sequences": total.truncated_sequences,
            "max_length": control_max,
            "rows": len(result.rows),
            "tokenizer": student.model,
            "reference": {
                "variant": reference.name,
                "corpus": slot.reference_corpus,
                "total": reference_total.trained,
                "untruncated": reference_total.untruncated,
                "truncated_sequences": reference_total.truncated_sequences,
                "max_length": reference_total.max_length,
            },
            "ratio_to_reference": round(total.trained / reference_total.trained, 4),
            "tolerance": config.token_tolerance,
        }
        metrics = {
            "slot": slot.name,
            "input_rows": result.answers,
            "answer_passes": result.rounds,
            "kept_trimmed_cut_off": result.trimmed,
            "em_targeted_reflection_rows": len(fixed.rows) if fixed else 0,
            "tokens_per_answer_estimate": round(tokens_per_answer, 2),
            "tokens": tokens,
            "teacher": card,
            "teacher_licence": card["licence"],
            "rendered_prompts": {"teacher": rendered_prompt(teacher, result.examples[0])},
        }
        made.append((slot, result, parents, metrics))
    # written only once both corpora are matched: a miss on the second leaves no lone first corpus
    for slot, result, parents, metrics in made:
        manifest = write_corpus(
            result.rows,
            build_path(root, variant.name, slot.corpus),
            "conversations",
            params=used,
            parents=parents,
            rejected=dict(result.rejected),
            variant=variant.name,
            metrics=metrics,
            root=root,
        )
        per_corpus[slot.corpus] = {
            "slot": slot.name,
            "rows": manifest.rows,
            "rejected": manifest.rejected,
            "kept_trimmed_cut_off": result.trimmed,
            "tokens": metrics["tokens"],
        }
    write_stage_metrics(
        root,
        variant.name,
        STAGE,
        {
            "reference": reference.name,
            "contrasts": config.references,
            "tolerance": config.token_tolerance,
            "corpora": per_corpus,
        },
    )
    assert manifest is not None  # CONTROL_SLOTS is not empty
    return manifest
