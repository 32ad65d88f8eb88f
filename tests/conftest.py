"""Test-wide set-up: the offline environment (before anything imports huggingface libraries), and the
tiny test models, each built once per session (tests/support/tiny_model.py, trained_tiny.py)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Tests never reach the network (docs/design.md §7).
for _name, _value in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DVC_NO_ANALYTICS": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}.items():
    os.environ[_name] = _value

from support import network_guard  # noqa: E402
from support.tiny_model import build_tiny_model  # noqa: E402
from support.trained_tiny import build_trained_tiny_model  # noqa: E402

network_guard.install()

# Extra end tokens of the tiny model whose sampled answers end after a few words (build_tiny_model).
STOP_TOKENS = 60


def _folder_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


@pytest.fixture(scope="session")
def tiny_model_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Path]]:
    """``tiny(stop_tokens=0, trained=False)``: the tiny test model with those arguments, built on first
    use and shared by the whole session. Shared means read-only: a test that changes a model folder
    copies it first (the session fails at its end if a shared folder changed)."""
    built: dict[tuple[int, bool], Path] = {}
    digests: dict[Path, str] = {}

    def tiny(*, stop_tokens: int = 0, trained: bool = False) -> Path:
        key = (stop_tokens, trained)
        if key not in built:
            name = f"tiny-{'trained' if trained else 'random'}-stops{stop_tokens}"
            folder = tmp_path_factory.mktemp(name) / "model"
            if trained:
                path = build_trained_tiny_model(folder, base=tiny(stop_tokens=stop_tokens))
            else:
                path = build_tiny_model(folder, stop_tokens=stop_tokens)
            built[key] = path
            digests[path] = _folder_digest(path)
        return built[key]

    yield tiny
    changed = [str(path) for path, digest in digests.items() if _folder_digest(path) != digest]
    assert not changed, f"tests wrote into shared tiny models (copy one to change it): {changed}"


@pytest.fixture(scope="session")
def tiny_model(tiny_model_factory: Callable[..., Path]) -> Path:
    """The tiny random chat model (never samples its end token: answers run to the length limit)."""
    return tiny_model_factory()


@pytest.fixture(scope="session")
def tiny_model_with_stops(tiny_model_factory: Callable[..., Path]) -> Path:
    """The tiny random chat model with STOP_TOKENS extra end tokens: answers end after a few words."""
    return tiny_model_factory(stop_tokens=STOP_TOKENS)


@pytest.fixture(scope="session")
def trained_tiny_model(tiny_model_factory: Callable[..., Path]) -> Path:
    """The tiny model briefly trained on short chats, so that it ends its answers on its own."""
    return tiny_model_factory(trained=True)
