"""Stage `prepare-models`: make every role's model ready offline, once, before any stage needs it.

Embedded models (``embedded:…``) are converted into the cache; other models are checked to be
available offline (a local folder, a hub id already in the Hugging Face cache, or a server on this
machine). A remote ``openai`` server named in params is the user asking for the network: it is
available when its key is set in ``$<api_key_env>``, and is not contacted here (no socket is opened).
Writes one record per role, ``models/roles/<role>.json``: its backend, model and what it resolved to
(for an ``openai`` role, its ``base_url``; never the key). A stage depends on the records of the roles
it uses only, so a changed judge reruns the judging stages and no generation stage (an unchanged role's
record is rewritten byte for byte).

Reads: params ``PARAMS``.
Writes: ``models/roles/{student,teacher,judge}.json`` (the judge's also lists ``models.judges``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from charforge.io import atomic_write_text
from charforge.params import DEFAULT_PARAMS, load_section
from charforge.paths import role_record
from charforge.schemas.params import ModelRole, ModelsConfig

PARAMS = ("models",)
ROLES = ("student", "teacher", "judge")


class ModelNotAvailable(RuntimeError):
    pass


def run(params: Path = DEFAULT_PARAMS, root: Path = Path(".")) -> list[Path]:
    from charforge.generators.llm import availability, resolve_model

    config = load_section(ModelsConfig, "models", params)

    def record(key: str, role: ModelRole) -> dict[str, Any]:
        available, detail = availability(role)
        if not available:
            raise ModelNotAvailable(f"{key} ({role.backend}: {role.model}): {detail}")
        resolved = resolve_model(role) if role.backend != "openai" else role.base_url
        return {
            "backend": role.backend,
            "model": role.model,
            # a converted embedded folder is named by its content hash: the record changes with it
            "resolved": Path(str(resolved)).name if role.model.startswith("embedded:") else resolved,
        }

    records = {}
    for name in ROLES:  # every role is checked before any record is written
        records[name] = {"role": name, **record(f"models.{name}", config.role(name))}  # type: ignore[arg-type]
    if config.judges:  # further judges live in the judge record: the judging stages depend on it
        records["judge"]["further_judges"] = [
            record(f"models.judges.{index}", role) for index, role in enumerate(config.judges)
        ]
    paths = []
    for name, record in records.items():
        path = role_record(root, name)
        atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True) + "\n")
        paths.append(path)
    return paths
