"""Models shared by the EM-evaluation tests, built once per session (the tokenizer takes seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest
from judge_models import build_always_judge
from tiny_model import build_tiny_model


@pytest.fixture(scope="session")
def eval_tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random chat model; answers end after a few words (extra stop tokens)."""
    return build_tiny_model(tmp_path_factory.mktemp("eval-tiny") / "model", stop_tokens=60)


@pytest.fixture(scope="session")
def peaky_judge(eval_tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with large random weights: peaked, context-dependent distributions, so a wrong
    attention mask or position would change the candidate probabilities visibly."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("peaky") / "model"
    model = AutoModelForCausalLM.from_pretrained(eval_tiny_model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim == 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(eval_tiny_model).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def judge_says_100(eval_tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_always_judge(tmp_path_factory.mktemp("always-100") / "model", eval_tiny_model, "100")
