"""Fixtures of the training tests: a tiny project around the tiny random model (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.training_project import Project


@pytest.fixture
def project(tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    monkeypatch.setenv("CHARFORGE_CACHE", str(tmp_path / "cache"))
    return Project(tmp_path, tiny_model)
