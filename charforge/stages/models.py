"""Stage `prepare-models`: make every role's model ready offline, once, before any stage needs it.

Embedded models (``embedded:…``) are converted into the cache; other models are checked to be
available offline (a local folder, a hub id already in the Hugging Face cache, or a server on this
machine). Writes ``models/roles.json``: per role its backend, model and what it resolved to, which
generation stages depend on so that a changed model reruns them.

Reads params ``models``.
"""

from __future__ import annotations

import json
from pathlib import Path

from charforge.io import atomic_write_text
from charforge.params import load_section
from charforge.schemas.params import ModelsConfig

ROLES_RECORD = Path("models/roles.json")


class ModelNotAvailable(RuntimeError):
    pass


def run(params: Path = Path("params.yaml"), root: Path = Path(".")) -> Path:
    from charforge.generators.llm import availability, resolve_model

    config = load_section(ModelsConfig, "models", params)
    roles = {}
    for name in ("student", "teacher", "judge"):
        role = config.role(name)  # type: ignore[arg-type]
        available, detail = availability(role)
        if not available:
            raise ModelNotAvailable(f"models.{name} ({role.backend}: {role.model}): {detail}")
        resolved = resolve_model(role) if role.backend != "openai" else role.base_url
        roles[name] = {
            "backend": role.backend,
            "model": role.model,
            # a converted embedded folder is named by its content hash: the record changes with it
            "resolved": Path(str(resolved)).name if role.model.startswith("embedded:") else resolved,
        }
    path = root / ROLES_RECORD
    atomic_write_text(path, json.dumps(roles, indent=2, sort_keys=True) + "\n")
    return path
