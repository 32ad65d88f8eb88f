"""Fixtures of the training tests: the tiny random model and a tiny project around it."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_model import build_tiny_model
from training_project import Project


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-train") / "model")


@pytest.fixture
def project(tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    monkeypatch.setenv("CHARFORGE_CACHE", str(tmp_path / "cache"))
    return Project(tmp_path, tiny_model)
