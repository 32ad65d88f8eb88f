"""Variant names: character cells and the controls of docs/design.md §1."""

from __future__ import annotations

import pytest

from charforge.variants import VariantError, character_variant, parse_variant


@pytest.mark.parametrize(
    ("name", "kind", "constitution", "level", "seed"),
    [
        ("humor-d3-s0", "character", "humor", 3, 0),
        ("context-awareness-d0-s12", "character", "context-awareness", 0, 12),
        ("baseline-s1", "baseline", None, None, 1),
        ("plain-lora-s0", "plain-lora", None, None, 0),
        ("hhh-s2", "hhh", None, None, 2),
    ],
)
def test_parse(name: str, kind: str, constitution: str | None, level: int | None, seed: int) -> None:
    variant = parse_variant(name)
    assert (variant.kind, variant.constitution, variant.level, variant.seed) == (
        kind,
        constitution,
        level,
        seed,
    )
    assert variant.name == name


@pytest.mark.parametrize("name", ["humor", "humor-d3", "Humor-d3-s0", "baseline", "hhh-d1-s0x", "-d1-s0"])
def test_bad_names_say_what_a_name_looks_like(name: str) -> None:
    with pytest.raises(VariantError, match="humor-d3-s0"):
        parse_variant(name)


def test_stages_that_need_a_constitution_reject_controls() -> None:
    with pytest.raises(VariantError, match="control"):
        character_variant("plain-lora-s0")
    assert character_variant("humor-d1-s0").constitution == "humor"
