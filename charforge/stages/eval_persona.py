"""Stage `eval-persona`: the persona's answers (before the EM fine-tune), sampled and judged once per variant.

Every EM seed's `eval-em` reads them as its "before EM" point, so adding an EM seed never re-evaluates the
persona. The plan (broad, cued and in-domain questions, held-out trait prompts), the judges and their
validation are `eval-em`'s (``charforge.stages.eval_em``): the same params, declared the same way.

Reads: as `eval-em`, without the EM adapters.
Writes: ``corpora/eval/<variant>/persona-samples.parquet`` and its manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from charforge.corpus import write_corpus
from charforge.params import DEFAULT_PARAMS
from charforge.schemas.params import ModelRole
from charforge.stages.common import persona_config
from charforge.stages.eval_em import PARAMS, evaluate_point, params_for, persona_samples_path, setup

__all__ = ["PARAMS", "params_for", "run"]


def run(
    variant_name: str, params: Path = DEFAULT_PARAMS, root: Path = Path("."), role: ModelRole | None = None
) -> dict[str, Any]:
    """Stage `eval-persona`: sample and judge the persona (before EM) once; every EM seed's `eval-em`
    reads these answers as its "before" point. ``role`` replaces ``model_for`` (tests, ad-hoc models)."""
    s = setup(variant_name, params, root)
    if role is None:
        from charforge.train.compose import model_for

        role = model_for(s.variant.name, "persona", s.student, persona_config(s.variant, params), root)
    rows, blocks = evaluate_point(s, "persona", role)
    summary = {
        "answers": len(rows),
        "judges": [block["name"] for block in blocks],
        # what eval-em checks before setting these scores beside its own: a local judge's dtype
        "judge_dtypes": {block["name"]: block.get("dtype") for block in blocks},
    }
    write_corpus(
        rows,
        persona_samples_path(root, s.variant.name),
        "eval-samples",
        params={**s.declared, "evaluated": {"persona": role.model_dump(mode="json")}},
        parents=s.inputs.parents(root),
        variant=s.variant.name,
        metrics=summary,
        root=root,
    )
    return summary
