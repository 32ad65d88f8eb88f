"""Stage `persona`: fold the variant's persona (docs/design.md §2) and record which model it is.

The folded weights go to the content-addressed fold cache (``charforge.train.fold``), not into DVC:
the stage's output is ``models/<variant>/persona.json``, a small record of the base model, each
adapter's file hashes and weight, and the fold key. It changes exactly when the persona does, so every
later stage (EM data with reflection, the EM fine-tune, evaluation) depends on that one file whatever
the variant's kind — a character variant (DPO + SFT), a ``plain-lora`` / ``hhh`` control (``dpo-slot`` +
SFT, with the character arm's weights), or the baseline (the student).

Reads: params ``params_for(variant)`` (the persona weights its kind folds in); the adapters under
``models/<variant>/``; ``models/roles/student.json``.
Writes: ``models/<variant>/persona.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from charforge import __version__
from charforge.io import atomic_write_text
from charforge.params import DEFAULT_PARAMS, load_section
from charforge.paths import MODELS
from charforge.schemas.params import ModelRole, PersonaConfig
from charforge.stages.common import persona_config, persona_params
from charforge.train.compose import adapters_for, model_for
from charforge.train.fold import FOLD_RECORD, adapter_identity
from charforge.variants import Variant, parse_variant

PARAMS = ("models.student", "persona")


def params_for(variant: Variant) -> tuple[str, ...]:
    return ("models.student", *persona_params(variant))


def persona_record(
    variant_name: str, student: ModelRole, persona: PersonaConfig, root: Path
) -> dict[str, Any]:
    """What the persona is: the student, the adapters folded in, and the folded folder's key."""
    variant = parse_variant(variant_name)
    adapters = adapters_for(variant, "persona", persona, root)
    role = model_for(variant.name, "persona", student, persona, root)  # folds (once) when there are adapters
    folded = Path(role.model) / FOLD_RECORD
    return {
        "variant": variant.name,
        "kind": variant.kind,
        "student": student.model_dump(mode="json", include={"backend", "model", "dtype"}),
        "adapters": [
            {"path": str(adapter.path.relative_to(root)), **adapter_identity(adapter)} for adapter in adapters
        ],
        "fold_key": json.loads(folded.read_text())["key"] if adapters else None,
        "tool_version": __version__,
    }


def run(variant_name: str, params: Path = DEFAULT_PARAMS, root: Path = Path(".")) -> Path:
    student = load_section(ModelRole, "models.student", params)
    persona = persona_config(parse_variant(variant_name), params)
    record = persona_record(variant_name, student, persona, root)
    path = root / MODELS / variant_name / "persona.json"
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return path
