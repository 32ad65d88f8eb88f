"""Profiles: named sets of values written into ``params.yaml`` in one command.

``profiles/<name>.yaml`` holds what a profile sets (``smoke``: CPU and the embedded model, the default;
``full``: a GPU student, a strong teacher, a named judge, the published recipes and sample counts):

- its header, the comment block before its first key, which says which profile this is;
- ``profile: <name>``, which records the active profile in params.yaml. No stage declares it, so DVC
  reruns nothing for the name alone; it is there to be read by people and reported;
- the values, each with its end-of-line comment (why this value, and its source).

``charforge profile full`` writes all three into params.yaml and keeps every key and every comment the
profile does not set, so each DVC stage still depends on exactly the keys it reads and ``dvc repro``
reruns what the switch changed. params.yaml's comments never describe another profile's values: the
header is the active profile's, and on a line a profile sets the end-of-line comment is that profile's,
or none where it has none and another profile comments the line; a line no profile comments keeps
params.yaml's own comment, which says what the key means and is the same in every profile. Every profile
sets the same keys, so switching back and forth is exact, byte for byte.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from charforge.io import atomic_write_text, load_yaml, read_text

PROFILES = Path("profiles")
PROFILE_KEY = "profile"  # the active profile's name, in params.yaml and in each profile file


class ProfileError(ValueError):
    pass


def leaves(mapping: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(path, value) of every non-mapping value; a list is a leaf."""
    for key, value in mapping.items():
        if isinstance(value, Mapping) and value:
            yield from leaves(value, (*prefix, str(key)))
        else:
            yield (*prefix, str(key)), value


def profile_names(root: Path = Path(".")) -> list[str]:
    return sorted(p.stem for p in (root / PROFILES).glob("*.yaml"))


def load_profile(name: str, root: Path = Path(".")) -> dict[str, Any]:
    """The values profile ``name`` sets; ProfileError where the file is missing, has a repeated key, is
    not a mapping, does not name itself in ``profile:`` or has no header."""
    path = root / PROFILES / f"{name}.yaml"
    if not path.is_file():
        known = profile_names(root)
        raise ProfileError(f"no profile {name!r} ({path} not found); profiles: {', '.join(known) or 'none'}")
    text = read_text(path)
    document, duplicates = load_yaml(text)
    if duplicates:
        line, message = duplicates[0]
        raise ProfileError(f"{path}:{line}: {message}")
    if not isinstance(document.data, dict):
        raise ProfileError(f"{path}: a profile is a mapping of params.yaml sections")
    if document.data.get(PROFILE_KEY) != name:
        raise ProfileError(f"{path}: a profile records its own name: `{PROFILE_KEY}: {name}`")
    if not text.startswith("#"):
        # params.yaml's header is the active profile's: without one it would keep the previous profile's
        raise ProfileError(f"{path}: a profile starts with its header, a comment saying which profile it is")
    return document.data


def apply_profile(name: str, params: Path = Path("params.yaml"), root: Path = Path(".")) -> list[str]:
    """Write profile ``name`` into ``params`` (its header, values and their end-of-line comments); return
    the dotted keys whose value changed. The file is rewritten only where its text changes."""
    load_profile(name, root)  # checked: exists, a mapping, no duplicate keys, names itself, has a header
    yaml = _round_trip()
    before = read_text(params)
    document = yaml.load(before)
    if not isinstance(document, Mapping):
        raise ProfileError(f"{params}: params is a mapping of sections")
    # The profile's values as ruamel nodes, so lists and numbers keep the profile's own spelling.
    profile = yaml.load(read_text(root / PROFILES / f"{name}.yaml"))
    others = [yaml.load(read_text(root / PROFILES / f"{other}.yaml")) for other in profile_names(root)]
    changed: list[str] = []
    for path, value in leaves(profile):
        node, source = document, profile
        for depth, part in enumerate(path):
            key = _key(node, part)
            last = depth == len(path) - 1
            if last and path == (PROFILE_KEY,) and key not in node:
                changed.append(PROFILE_KEY)
                node.insert(0, key, _plain(value))  # first, under the header it goes with
            elif last and (key not in node or node[key] != value):
                changed.append(".".join(path))
                node[key] = _plain(value)
            elif not last and (key not in node or not isinstance(node[key], Mapping)):
                node[key] = type(document)()
            own = _key(source, part)
            _set_comment(node, key, _comment(source, own), _commented(others, path[: depth + 1]))
            node, source = node[key], source[own]
    document.ca.comment = [None, copy.deepcopy(profile.ca.comment[1])]  # the header, checked to exist
    buffer = io.StringIO()
    yaml.dump(document, buffer)
    if buffer.getvalue() != before:
        atomic_write_text(params, buffer.getvalue())
    return changed


def _round_trip() -> Any:
    from ruamel.yaml import YAML

    yaml = YAML()  # round trip: comments, quotes and key order survive
    yaml.width = 110
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.representer.add_representer(
        type(None), lambda representer, _: representer.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    return yaml


def _key(node: Mapping[Any, Any], key: str) -> Any:
    """The existing key of ``node`` spelled ``key`` (params use integer keys for diversity levels)."""
    for existing in node:
        if str(existing) == key:
            return existing
    return int(key) if key.isdigit() else key


def _plain(value: Any) -> Any:
    """``value`` without the comments it had in the profile file (the emitter would write a list's own
    comment after it, where params.yaml would keep it through the next switch), in its flow or block
    style."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(value, CommentedSeq):
        plain: Any = CommentedSeq(_plain(item) for item in value)
    elif isinstance(value, CommentedMap):
        plain = CommentedMap((key, _plain(item)) for key, item in value.items())
    else:
        return value
    style = value.fa.flow_style()  # None (an empty collection): the emitter's choice, as on loading
    if style is True:
        plain.fa.set_flow_style()
    elif style is False:
        plain.fa.set_block_style()
    return plain


def _comment(node: Any, key: Any) -> Any:
    """The end-of-line comment token of ``key`` in the ruamel mapping ``node`` (None: none)."""
    items = getattr(node, "ca", None)
    token = items.items.get(key, [None] * 4)[2] if items is not None else None
    return token if token is not None and token.value.startswith("#") else None


def _commented(profiles: list[Any], path: tuple[str, ...]) -> bool:
    """Whether any profile comments the line of ``path``."""
    for profile in profiles:
        node = profile
        for part in path[:-1]:
            node = node.get(_key(node, part)) if isinstance(node, Mapping) else None
        if isinstance(node, Mapping) and _is_block(node) and _comment(node, _key(node, path[-1])) is not None:
            return True
    return False


def _is_block(node: Any) -> bool:
    return not (hasattr(node, "fa") and node.fa.flow_style())


def _set_comment(node: Any, key: Any, comment: Any, profiled: bool) -> None:
    """Give ``key``'s line in params the profile's end-of-line ``comment``; without one, no comment where
    some profile comments the line (it would be that profile's), else params.yaml's own. The blank
    lines after the line stay."""
    if not _is_block(node) or (comment is None and not profiled):
        return  # inside a flow collection the line is the parent's
    from ruamel.yaml.error import CommentMark
    from ruamel.yaml.tokens import CommentToken

    entry = node.ca.items.setdefault(key, [None, None, None, None])
    old = entry[2]
    after = ""  # what the token holds after the line's own end: blank lines
    if old is not None:
        after = old.value.partition("\n")[2]
    own = comment.value.partition("\n")[0] if comment is not None else ""
    if not own and not after:
        entry[2] = None
        return
    column = comment.column if comment is not None else (old.column if old is not None else 0)
    entry[2] = CommentToken(f"{own}\n{after}", CommentMark(column), None)
