"""Judge models shared by the EM-evaluation tests, built once per session from the tiny model with
extra stop tokens (``tiny_model_with_stops``, tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.judge_models import build_always_judge


@pytest.fixture(scope="session")
def peaky_judge(tiny_model_with_stops: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with large random weights: peaked, context-dependent distributions, so a wrong
    attention mask or position would change the candidate probabilities visibly."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("peaky") / "model"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_with_stops)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim == 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_with_stops).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def judge_says_100(tiny_model_with_stops: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_always_judge(tmp_path_factory.mktemp("always-100") / "model", tiny_model_with_stops, "100")
