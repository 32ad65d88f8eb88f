"""The offline environment every charforge entry point sets before heavy imports (docs/design.md §7).

No code path reaches the network unless the user asked for it (publish, a remote backend); those
paths lift the relevant variables themselves. Values already in the environment win, so a user can
opt in deliberately.
"""

from __future__ import annotations

import os
from pathlib import Path

OFFLINE_DEFAULTS: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DVC_NO_ANALYTICS": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}


# The variables apply_offline_env set itself (not the user): a path that needs the network may lift
# only these; a value the user exported stays the user's decision.
SET_BY_CHARFORGE: set[str] = set()


def apply_offline_env(project_root: Path | None = None) -> None:
    """Set offline defaults and project-local caches (HF_HOME, DISTILABEL_CACHE_DIR)."""
    for name, value in OFFLINE_DEFAULTS.items():
        if name not in os.environ:
            os.environ[name] = value
            SET_BY_CHARFORGE.add(name)
    if project_root is not None:
        cache = project_root / "cache"
        os.environ.setdefault("HF_HOME", str(cache / "huggingface"))
        os.environ.setdefault("DISTILABEL_CACHE_DIR", str(cache / "distilabel"))
