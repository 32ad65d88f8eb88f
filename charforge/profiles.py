"""Profiles: named sets of values written into ``params.yaml`` in one command.

``profiles/<name>.yaml`` holds the values a profile sets (``smoke``: CPU and the embedded model, the
default; ``full``: a GPU student, a strong teacher, a named judge, literature hyperparameters and
sample counts). ``charforge profile full`` writes them into params.yaml, keeping its comments and
every key the profile does not set, so each DVC stage still depends on exactly the keys it reads and
``dvc repro`` reruns what the switch changed. Every profile sets the same keys, so switching back and
forth is exact.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from charforge.io import atomic_write_text, load_yaml, read_text

PROFILES = Path("profiles")


class ProfileError(ValueError):
    pass


def leaves(mapping: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(path, value) of every non-mapping value; a list is a leaf."""
    for key, value in mapping.items():
        if isinstance(value, Mapping) and value:
            yield from leaves(value, (*prefix, str(key)))
        else:
            yield (*prefix, str(key)), value


def load_profile(name: str, root: Path = Path(".")) -> dict[str, Any]:
    path = root / PROFILES / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (root / PROFILES).glob("*.yaml"))
        raise ProfileError(f"no profile {name!r} ({path} not found); profiles: {', '.join(known) or 'none'}")
    document, duplicates = load_yaml(read_text(path))
    if duplicates:
        line, message = duplicates[0]
        raise ProfileError(f"{path}:{line}: {message}")
    if not isinstance(document.data, dict):
        raise ProfileError(f"{path}: a profile is a mapping of params.yaml sections")
    return document.data


def apply_profile(name: str, params: Path = Path("params.yaml"), root: Path = Path(".")) -> list[str]:
    """Write profile ``name`` into ``params``; return the dotted keys whose value changed."""
    from ruamel.yaml import YAML

    load_profile(name, root)  # checked: exists, a mapping, no duplicate keys
    yaml = YAML()  # round trip: comments, quotes and key order survive
    yaml.width = 110
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.representer.add_representer(
        type(None), lambda representer, _: representer.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    document = yaml.load(read_text(params))
    # The profile's values as ruamel nodes, so lists and numbers keep the profile's own spelling.
    profile = yaml.load(read_text(root / PROFILES / f"{name}.yaml"))
    changed: list[str] = []
    for path, value in leaves(profile):
        node = document
        for key in path[:-1]:
            if key not in node or not isinstance(node[key], Mapping):
                node[key] = {}
            node = node[key]
        key = _key(node, path[-1])
        if key not in node or node[key] != value:
            changed.append(".".join(path))
            node[key] = value
    if changed:
        buffer = io.StringIO()
        yaml.dump(document, buffer)
        atomic_write_text(params, buffer.getvalue())
    return changed


def _key(node: Mapping[Any, Any], key: str) -> Any:
    """The existing key of ``node`` spelled ``key`` (params use integer keys for diversity levels)."""
    for existing in node:
        if str(existing) == key:
            return existing
    return int(key) if key.isdigit() else key
