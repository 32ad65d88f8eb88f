"""Variant names: one cell of the ablation grid, readable in paths.

Character variants are ``<constitution>-d<level>-s<seed>`` (``humor-d3-s0``); the controls of
docs/design.md §1 are ``baseline-s<seed>`` (no character training), ``plain-lora-s<seed>`` (diverse
prompts answered with no constitution, as SFT data) and ``hhh-s<seed>`` (HHH-style answers, as SFT
data). The neutral constitution is a character variant like any other (``neutral-d3-s0``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

VariantKind = Literal["character", "baseline", "plain-lora", "hhh"]
CONTROL_KINDS: tuple[VariantKind, ...] = ("baseline", "plain-lora", "hhh")
CHARACTER_RE = re.compile(r"(?P<constitution>[a-z0-9][a-z0-9-]*?)-d(?P<level>[0-9]+)-s(?P<seed>[0-9]+)")
CONTROL_RE = re.compile(r"(?P<kind>baseline|plain-lora|hhh)-s(?P<seed>[0-9]+)")


class VariantError(ValueError):
    pass


@dataclass(frozen=True)
class Variant:
    name: str
    kind: VariantKind
    seed: int
    constitution: str | None = None  # character variants only
    level: int | None = None  # character variants only

    @property
    def is_character(self) -> bool:
        return self.kind == "character"


def parse_variant(name: str) -> Variant:
    """``humor-d3-s0`` → constitution humor, diversity level 3, seed 0; ``baseline-s1`` → baseline, seed 1."""
    control = CONTROL_RE.fullmatch(name)
    if control:
        return Variant(name, control["kind"], int(control["seed"]))  # type: ignore[arg-type]
    match = CHARACTER_RE.fullmatch(name)
    if not match:
        raise VariantError(
            f"{name!r} is not a variant name: use <constitution>-d<level>-s<seed> (e.g. humor-d3-s0) "
            f"or a control ({', '.join(f'{kind}-s<seed>' for kind in CONTROL_KINDS)})"
        )
    return Variant(name, "character", int(match["seed"]), match["constitution"], int(match["level"]))


def character_variant(name: str) -> Variant:
    """The variant, which must be a character variant (stages that need a constitution)."""
    variant = parse_variant(name)
    if not variant.is_character:
        raise VariantError(f"{name!r} is a {variant.kind} control: this stage needs a character variant")
    return variant
