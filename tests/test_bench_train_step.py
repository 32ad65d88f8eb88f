"""bench/train_step.py (issue 16's GPU training-step benchmark) runs end to end on a CPU at its tiny shape:
the three steps through TRL's trainers with the full profile's LoRA settings, figures that add up, LoRA
weights that moved. Its FLOP formulas and peak table are checked against hand-computed figures."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "train_step.py"


def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_train_step", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


def test_tiny_run_trains_all_three_steps(tmp_path: Path) -> None:
    out = tmp_path / "train_step.json"
    command = [sys.executable, str(SCRIPT), "--shape", "tiny", "--steps", "2", "--repeats", "1"]
    result = subprocess.run(
        [*command, "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads(out.read_text())
    assert document["shape"] == "tiny" and document["steps"] == 2
    results = document["results"]
    assert set(results) == {"dpo", "sft", "em"}

    profile = yaml.safe_load((ROOT / "profiles" / "full.yaml").read_text())
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    expected_lora = {
        "dpo": profile["train_dpo"]["lora"],
        "sft": profile["train_sft"]["lora"],
        "em": {**params["em_finetune"]["lora"], **profile["em_finetune"].get("lora", {})},
    }
    trainers = {"dpo": "DPOTrainer", "sft": "SFTTrainer", "em": "SFTTrainer"}
    for name, figures in results.items():
        settings = figures["settings"]
        assert figures["trainer"] == trainers[name]
        assert settings["lora"] == expected_lora[name]
        assert settings["gradient_checkpointing"] is True  # TRL's default, which the profile keeps
        # Every optimizer step (warm-up included) trained exactly its micro-batches' tokens: no padding.
        per_step = (
            settings["sequences_per_micro_batch"] * settings["max_length"] * settings["gradient_accumulation"]
        )
        assert figures["tokens_per_step"] == [per_step] * (figures["warmup_steps"] + 2)
        assert figures["timed_steps"] == 2 and len(figures["step_seconds"]) == figures["warmup_steps"] + 2
        assert figures["tokens_per_s"] > 0 and figures["model_tflops"] > 0
        assert figures["plain"]["tokens_per_s"] > 0 and figures["plain"]["model_tflops"] > 0
        assert all(math.isfinite(loss) for loss in figures["losses"]) and len(figures["losses"]) == 3
        # LoRA B starts at zero: a norm above zero after the steps means the optimizer moved the adapter.
        assert figures["lora_change"]["lora_b_norm_after"] > 0
        assert figures["lora_change"]["delta_norm"] > 0
        assert figures["architecture"]["lora_parameters"] > 0
    assert results["em"]["settings"]["lora"]["use_rslora"] is True
    # DPO's micro-batch is both halves of every pair.
    assert (
        results["dpo"]["settings"]["sequences_per_micro_batch"]
        == 2 * results["dpo"]["settings"]["per_device_batch"]
    )
    assert "dpo" in result.stdout and "tok/s" in result.stdout


@pytest.mark.parametrize(
    ("name", "tflops"),
    [
        ("NVIDIA H100 80GB HBM3", 989.4),
        ("NVIDIA H200", 989.4),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H100 NVL", 835.0),
        ("NVIDIA GeForce RTX 4090", None),
    ],
)
def test_peak_table(name: str, tflops: float | None) -> None:
    assert bench().peak_tflops(name, None)[0] == tflops


def test_flops_follow_the_frozen_base_convention() -> None:
    module = bench()
    arch = {"n_body": 1000, "n_head": 100, "layers": 2, "d_attention": 8}
    # One sequence of 10 tokens, 4 of them scored by the loss.
    counts = [{"tokens": 10, "scored": 4, "squares": 100}]
    sft = module.step_flops(arch, 50, False, counts)
    # frozen 4 per weight and token, LoRA 6, attention 12·L·d·s per token, the head on scored tokens only
    assert sft["model"] == 10 * (4 * 1000 + 6 * 50) + 12 * 16 * 100 + 4 * 100 * 4
    assert sft["hardware"] == sft["model"] + 10 * (2 * 1000 + 2 * 50) + 4 * 16 * 100
    dpo = module.step_flops(arch, 50, True, counts)
    assert (
        dpo["model"] == sft["model"] + 10 * 2 * 1000 + 4 * 16 * 100 + 2 * 100 * 4
    )  # + the reference forward
