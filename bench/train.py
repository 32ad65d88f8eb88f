"""Benchmark: a DPO run through charforge's `train-dpo` stage vs a minimal plain-TRL script.

Both sides train the same LoRA with the same DPOConfig (built from the same params section) on the
same pairs, from the same base model. The charforge side is the stage itself
(`charforge.stages.train_dpo.run`: corpus validation, token-counting trainer, rich progress, atomic
adapter save, metrics); the plain side is what a user would write with TRL alone. Each run is a fresh
subprocess; the sides alternate (interleaved) and repeat. The figure is the time per optimizer
step of `trainer.train()` (the training loop, not model loading). Prints the median ratio
charforge / plain and its spread (target <= 1.05).

    .venv/bin/python bench/train.py [--model embedded:smollm2-135m-instruct] [--pairs 32] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

VARIANT = "bench-d0-s0"
PLAIN = """
import json, sys, time
from pathlib import Path
import polars as pl
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
from trl import DPOConfig, DPOTrainer
import yaml

root, model_path = Path(sys.argv[1]), sys.argv[2]
section = yaml.safe_load((root / "params.yaml").read_text())["train_dpo"]
set_seed(0)
rows = pl.read_parquet(root / "corpora/build/bench-d0-s0/pairs.parquet").to_dicts()
data = Dataset.from_list([{k: [{"role": m["role"], "content": m["content"]} for m in row[k]]
                          for k in ("prompt", "chosen", "rejected")} for row in rows])
tokenizer = AutoTokenizer.from_pretrained(model_path)
model = AutoModelForCausalLM.from_pretrained(model_path, dtype="auto")
args = DPOConfig(output_dir=str(root / "plain-out"), seed=0, data_seed=0, report_to="none",
                 save_strategy="no", logging_steps=1, **section["trainer"])
trainer = DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                     peft_config=LoraConfig(task_type="CAUSAL_LM", **section["lora"]))
start = time.perf_counter()
trainer.train()
seconds = time.perf_counter() - start
trainer.model.save_pretrained(root / "plain-adapter")
Path(sys.argv[3]).write_text(json.dumps({"seconds": seconds, "steps": trainer.state.global_step}))
"""
CHARFORGE = """
import json, sys
from pathlib import Path
from charforge.stages import train_dpo
record = train_dpo.run("bench-d0-s0", Path(sys.argv[1]) / "params.yaml", Path(sys.argv[1]))
figures = {"seconds": record.wall_seconds, "steps": record.optimizer_steps}
Path(sys.argv[3]).write_text(json.dumps(figures))
"""
TOPICS = [
    "tides", "bread", "chess", "rain", "maps", "bees", "clocks", "glass", "kites", "salt", "moss", "ink",
]  # fmt: skip


def pair(index: int) -> dict:
    topic = TOPICS[index % len(TOPICS)]
    return {
        "id": f"pair-{index:04d}",
        "variant": VARIANT,
        "prompt": [{"role": "user", "content": f"Tell me something about {topic} (question {index})."}],
        "chosen": [
            {
                "role": "assistant",
                "content": f"Ah, {topic}! Few things are so quietly astonishing. Here is one fact worth "
                f"a smile, and a second that explains why it matters for everyday life (#{index}).",
            }
        ],
        "rejected": [{"role": "assistant", "content": f"{topic.capitalize()} is a common topic. ({index})"}],
        "provenance": {"generator": "bench.train", "tool_version": "bench", "seed": 0},
    }


def make_project(root: Path, model: str, pairs: int) -> None:
    from charforge.corpus import write_corpus

    params = yaml.safe_load(Path("params.yaml").read_text())
    trainer = {**params["train_dpo"]["trainer"], "max_length": 128, "per_device_train_batch_size": 4}
    (root / "params.yaml").write_text(
        yaml.safe_dump(
            {
                "models": {role: {"model": model} for role in ("student", "teacher", "judge")},
                "train_dpo": {"lora": params["train_dpo"]["lora"], "trainer": trainer},
            }
        )
    )
    path = root / "corpora/build" / VARIANT / "pairs.parquet"
    write_corpus([pair(i) for i in range(pairs)], path, "pairs", variant=VARIANT)


def measure(script: str, root: Path, model_path: str) -> float:
    figures_path = root / "figures.json"
    figures_path.unlink(missing_ok=True)
    result = subprocess.run(
        [sys.executable, "-c", script, str(root), model_path, str(figures_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not figures_path.is_file():
        sys.exit(f"benchmark run failed:\n{result.stderr[-3000:]}")
    figures = json.loads(figures_path.read_text())
    return figures["seconds"] / figures["steps"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from charforge.generators.llm import resolve_model
    from charforge.offline import apply_offline_env
    from charforge.schemas.params import ModelRole

    apply_offline_env()
    model_path = resolve_model(ModelRole(model=args.model))
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        make_project(root, args.model, args.pairs)
        plain: list[float] = []
        charforge: list[float] = []
        for repeat in range(args.repeats):
            order = [("plain", PLAIN, plain), ("charforge", CHARFORGE, charforge)]
            for name, script, into in order if repeat % 2 == 0 else order[::-1]:
                started = time.perf_counter()
                into.append(measure(script, root, model_path))
                print(
                    f"repeat {repeat} {name:9s} {into[-1]:.3f} s/step "
                    f"(run {time.perf_counter() - started:.0f} s)",
                    flush=True,
                )
    ratios = [c / p for c, p in zip(charforge, plain, strict=True)]
    print(
        f"\nmodel {args.model}, {args.pairs} pairs, {args.repeats} repeats per side\n"
        f"median s/step: plain TRL {statistics.median(plain):.3f}, "
        f"charforge {statistics.median(charforge):.3f}\n"
        f"ratio charforge / plain: median {statistics.median(ratios):.3f} "
        f"(per-repeat min {min(ratios):.3f}, max {max(ratios):.3f}; target <= 1.05)"
    )


if __name__ == "__main__":
    main()
