"""Folding adapters: weights scale the update linearly, folds are cached by content, and a changed or
missing adapter is never served from a stale fold."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model

from charforge.train.fold import Adapter, fold, load_causal_lm

WEIGHT = "model.layers.0.self_attn.q_proj.weight"


def random_adapter(base: Path, path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(load_causal_lm(str(base)), config).save_pretrained(path)
    return path


def weight(folder: Path) -> torch.Tensor:
    return load_causal_lm(str(folder)).state_dict()[WEIGHT]


def test_a_weight_scales_the_adapter_update(tiny_model: Path, tmp_path: Path) -> None:
    adapter = random_adapter(tiny_model, tmp_path / "sft", seed=1)
    base = weight(tiny_model)
    full = weight(fold(str(tiny_model), [Adapter(adapter, 1.0)], cache=tmp_path))
    quarter = weight(fold(str(tiny_model), [Adapter(adapter, 0.25)], cache=tmp_path))
    assert not torch.equal(full, base)
    torch.testing.assert_close(quarter - base, 0.25 * (full - base), rtol=1e-4, atol=1e-6)


def test_adapters_fold_in_order_on_top_of_each_other(tiny_model: Path, tmp_path: Path) -> None:
    first = random_adapter(tiny_model, tmp_path / "dpo", seed=1)
    second = random_adapter(tiny_model, tmp_path / "sft", seed=2)
    one = fold(str(tiny_model), [Adapter(first)], cache=tmp_path)
    both = fold(str(tiny_model), [Adapter(first), Adapter(second)], cache=tmp_path)
    on_top = fold(str(one), [Adapter(second)], cache=tmp_path)
    torch.testing.assert_close(weight(both), weight(on_top))


def test_folds_are_cached_and_a_changed_adapter_refolds(tiny_model: Path, tmp_path: Path) -> None:
    adapter = random_adapter(tiny_model, tmp_path / "em", seed=1)
    folded = fold(str(tiny_model), [Adapter(adapter)], cache=tmp_path)
    stamps = {p.name: p.stat().st_mtime_ns for p in folded.iterdir()}
    assert fold(str(tiny_model), [Adapter(adapter)], cache=tmp_path) == folded
    assert {p.name: p.stat().st_mtime_ns for p in folded.iterdir()} == stamps  # served, not rewritten

    random_adapter(tiny_model, adapter, seed=2)  # retrained: same path, new weights
    refolded = fold(str(tiny_model), [Adapter(adapter)], cache=tmp_path)
    assert refolded != folded
    assert not torch.equal(weight(refolded), weight(folded))
    assert not [name for name in os.listdir(refolded.parent) if name.endswith(".tmp")]


def test_a_missing_adapter_says_which_stage_to_run(tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"models/x/sft: not a saved LoRA adapter .*run its training"):
        fold(str(tiny_model), [Adapter(tmp_path / "models" / "x" / "sft")], cache=tmp_path)
