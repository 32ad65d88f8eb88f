"""`prompts.source: imported` without a model: a variant's prompts drawn from an imported prompts corpus
pass the generated prompts' filters (held-out questions above all), number exactly prompts_per_trait per
trait with the training seeds, and are drawn by the variant's seed."""

from __future__ import annotations

from typing import Any

import pytest

from charforge.generators.chat import GenerationRun
from charforge.generators.prompts import SEED_SITUATION, PromptShortfall, imported_prompts
from charforge.schemas import Constitution, PromptRecord
from charforge.schemas.params import GenerationConfig, HeldOutConfig, PromptsConfig

PER_TRAIT = 6
HELD_OUT = HeldOutConfig(per_trait=1)
TRAITS = {
    "light-touch": "I find the light side of a dull problem.",
    "odd-facts": "My curiosity about odd facts shows when a question invites it.",
}
CONSTITUTION = Constitution.model_validate(
    {
        "name": "warm-wit",
        "version": "1",
        "description": "Imported.",
        "kind": "normative",
        "traits": [
            {
                "id": trait_id,
                "statement": statement,
                "questions": [
                    f"Question {index} for {trait_id}: what would you tell a friend who asked about {topic}?"
                    for index, topic in enumerate(["gardens", "trains", "rain"])
                ],
            }
            for trait_id, statement in TRAITS.items()
        ],
    }
)
TOPICS = "kites ferries lanterns pottery origami tides comets bees clocks maps chess owls".split()


def _row(trait_id: str, index: int, text: str) -> dict[str, Any]:
    return {
        "id": f"warm-wit.{trait_id}.imported{index:03d}",
        "variant": "warm-wit",
        "trait_id": trait_id,
        "situation": "imported",
        "diversity_level": 0,
        "is_seed": False,
        "prompt": [{"role": "user", "content": text}],
        "provenance": {
            "generator": "charforge.importers",
            "tool_version": "0",
            "constitution_sha256": CONSTITUTION.sha256(),
        },
    }


def _held_out_text(trait_id: str) -> str:
    trait = next(trait for trait in CONSTITUTION.traits if trait.id == trait_id)
    return trait.questions[CONSTITUTION.held_out(trait, HELD_OUT.per_trait)[0]]


def _rows() -> list[dict[str, Any]]:
    rows = []
    for trait_id in TRAITS:
        texts = [f"Tell me something surprising about {topic}, for {trait_id}." for topic in TOPICS]
        held = _held_out_text(trait_id)
        texts += [held, held.replace("?", " today?"), "x" * 200]  # held out, nearly, too long
        rows += [_row(trait_id, index, text) for index, text in enumerate(texts)]
    return rows


def _draw(seed: int, rows: list[dict[str, Any]] | None = None, **config: Any) -> Any:
    prompts = PromptsConfig.model_validate(
        {"prompts_per_trait": PER_TRAIT, "levels": {0: {}}, "max_prompt_chars": 150, **config}
    )
    run = GenerationRun(f"warm-wit-d0-s{seed}", seed, GenerationConfig())
    return imported_prompts(
        CONSTITUTION,
        _rows() if rows is None else rows,
        prompts,
        0,
        run,
        held_out=HELD_OUT,
        source="f.parquet",
    )


def test_drawn_prompts_pass_the_filters_and_fill_each_trait() -> None:
    result = _draw(0)
    for record in result.records:
        PromptRecord.model_validate(record)  # the prompts stage's schema
    texts = [record["prompt"][0]["content"] for record in result.records]
    assert not {_held_out_text(trait_id) for trait_id in TRAITS} & set(texts)
    assert not [text for text in texts if "today?" in text or text.startswith("xxx")]
    for trait_id in TRAITS:
        mine = [record for record in result.records if record["trait_id"] == trait_id]
        seeds = [record for record in mine if record["is_seed"]]
        assert len(mine) == PER_TRAIT and len(seeds) == 2  # 3 seeds, 1 held out
        assert {record["situation"] for record in seeds} == {SEED_SITUATION}
        drawn = [record for record in mine if not record["is_seed"]]
        assert all(record["id"].startswith(f"warm-wit-d0-s0.{trait_id}.imported") for record in drawn)
        assert {record["provenance"]["generator"] for record in drawn} == {"charforge.importers"}
    # per trait: 2 held out (exactly and nearly), 1 too long, 12 pass, 4 drawn, 8 not
    assert dict(result.rejected) == {"near_held_out": 4, "too_long": 2, "not_drawn": 16}
    assert result.level["imported_per_trait"]["odd-facts"] == {
        "imported": 15,
        "passed_filters": 12,
        "drawn": 4,
    }
    assert result.level["source"] == "imported" and result.level["constitution_matches"] is True


def test_the_draw_is_the_variant_seeds() -> None:
    def drawn(seed: int) -> list[str]:
        return sorted(record["id"].split(".", 1)[1] for record in _draw(seed).records)

    assert drawn(0) == drawn(0)
    assert drawn(0) != drawn(1)


def test_too_few_or_foreign_prompts_are_errors() -> None:
    with pytest.raises(PromptShortfall, match="light-touch: 4"):
        _draw(0, [row for row in _rows() if row["trait_id"] == "odd-facts"])
    foreign = [*_rows(), _row("not-a-trait", 0, "Hello there, what is new?")]
    with pytest.raises(ValueError, match="trait\\(s\\) constitution warm-wit does not have: not-a-trait"):
        _draw(0, foreign)
    # past max_traits, a trait needs no imported prompts
    first_only = [row for row in _rows() if row["trait_id"] == "light-touch"]
    assert len(_draw(0, first_only, max_traits=1).records) == PER_TRAIT
