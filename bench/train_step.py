"""Benchmark: tokens/s and MFU of the full profile's DPO, SFT and EM LoRA training steps (issue 16's Show).

Each step runs through TRL's own trainer (``DPOTrainer``, ``SFTTrainer``) with PEFT's LoRA, as charforge's
training stages do, on a randomly initialised model of the full profile's student shape (Qwen2.5-7B:
the shape is written out below, nothing is downloaded), built in bf16 directly on the device. Settings come
from ``profiles/full.yaml`` laid over ``params.yaml``, as ``charforge profile full`` would write them: LoRA
rank, alpha, rs-LoRA and targets, per-device batch, gradient accumulation, max length, bf16, and TRL's
config defaults for the rest (gradient checkpointing is on: TRL's default, which the profile keeps).

- **dpo**: ``train_dpo``; every micro-batch is ``batch`` pairs = 2 x ``batch`` sequences (chosen and
  rejected) of ``max_length`` tokens (prompt + completion), the policy forward + backward and the reference
  forward, which for a new LoRA is the same model with its adapter disabled (TRL's PEFT path).
- **sft**: ``train_sft`` (introspection), pre-tokenized ``input_ids`` + ``labels``, as charforge feeds it.
- **em**: ``em_finetune``: a new LoRA on the frozen persona. The persona is the student with its LoRAs
  folded in, the same shape and so the same compute as a LoRA on the base: it runs on the base here.

Synthetic sequences fill ``max_length`` exactly (no padding, no truncation), the first eighth of each
as the prompt (outside the loss). Real corpora are shorter on average: tokens/s is the figure to carry
over (a run's time = the tokens it trains, ``metrics/<variant>/<stage>.json``'s ``tokens_trained``, /
tokens/s), not seconds per step.

**Timing.** ``--warmup`` optimizer steps (CUDA kernels' first launches, the allocator's growth, the
optimizer's state) are excluded; then ``--steps`` optimizer steps are timed end to end (data collation,
the accumulated micro-batches, the optimizer, TRL's per-step logging), synchronised on the device.
Tokens are counted from every micro-batch's attention mask, as charforge's stages count them
(``tokens_trained``: chosen and rejected sequences each, prompt included).

**FLOPs and MFU.** Model FLOPs per token, the PaLM convention (Chowdhery et al. 2022, arXiv 2204.02311,
appendix B: 6N + 12·L·H·Q·T for training every weight; the attention term counts the whole T x T score
matrix, though a causal kernel computes about half of it, so MFU here reads a few % high at long T),
adapted to a frozen base as charforge's compute accounting is (``charforge.train.accounting``): a
forward costs 2 FLOPs per weight; the backward 2 per weight for the activation gradients (needed through
every layer, frozen or not) and 2 per *trainable* weight for the weight gradients, so a frozen weight
costs 4 per token and a trained one 6. With N_body the decoder's linear weights, N_head the LM head's,
N_lora the adapters', L layers, d = heads x head_dim and s the sequence's length:

- LoRA policy forward + backward: 4·N_body + 6·N_lora + 12·L·d·s per token, + 4·N_head per token the
  loss scores (TRL's fused LM head projects only those positions);
- DPO's reference forward: 2·N_body + 4·L·d·s per token, + 2·N_head per scored token;
- plain baseline: 4·N_body + 12·L·d·s + 4·N_head per token (the model's own loss scores every position).

The embedding lookup does no matmul and is left out. MFU = model FLOP/s / the device's dense bf16 peak
(``PEAK_TFLOPS``, by device name; ``--peak-tflops`` overrides). HFU also counts what gradient
checkpointing recomputes (the decoder's forward: 2·N_body + 2·N_lora + 4·L·d·s per token).

**Baseline** (bench/README.md's rule: measured in the same run, the ratio printed): on the same model
and device, for each step, a plain forward + backward of one micro-batch of that step's shape with no
LoRA, no TRL and no optimizer: ``model(input_ids, labels=labels).loss.backward()`` on the frozen bf16
weights, activation gradients flowing to the input embeddings, gradient checkpointing as the trainer
uses it. Measured before the trainer is built and again after its steps (the adapter disabled); the
ratio step FLOP/s / plain FLOP/s is what LoRA, TRL and the optimizer cost against the bare model at
that shape. A square bf16 matmul (8192 on a GPU), before and after, says what the chip itself does.

    python bench/train_step.py                          # --shape 7b on a GPU, tiny elsewhere
    python bench/train_step.py --shape tiny --steps 2 --json bench/out/train_step.json

Only torch, transformers, peft, trl (and its datasets) and PyYAML are imported: it runs on a GPU image
without charforge's other dependencies. On a GPU each step runs in a fresh process (its memory peak is
its own, and one step that runs out of memory leaves the others' figures); ``--shape tiny`` (a 2-layer
toy, lengths / 8, gradient accumulation at most 2) proves the script on a CPU in well under a minute.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# Qwen/Qwen2.5-7B-Instruct's config.json (the full profile's student), written out: no download.
QWEN25_7B: dict[str, Any] = {
    "vocab_size": 152064,
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "hidden_act": "silu",
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": False,
    "use_sliding_window": False,
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
}
# The same architecture, 2 layers, to prove the script on a CPU.
TINY: dict[str, Any] = {
    **QWEN25_7B,
    "vocab_size": 1024,
    "hidden_size": 64,
    "intermediate_size": 176,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "bos_token_id": 1,
    "eos_token_id": 1,
}
SHAPES = {"7b": QWEN25_7B, "tiny": TINY}
TINY_LENGTH_DIVISOR = 8  # tiny: max lengths / 8 ...
TINY_MAX_ACCUMULATION = 2  # ... and at most 2 micro-batches per optimizer step: a CPU proof, not a figure
PROMPT_FRACTION = 8  # the first 1/8 of every synthetic sequence is its prompt (outside the loss)
WORDS = 1024  # the synthetic tokenizer's vocabulary (token ids only index the embedding: speed is the same)

# Dense bf16 tensor-core peak, TFLOP/s, from NVIDIA's datasheets (their "with sparsity" figures / 2).
# First match wins: the specific names before the generic.
PEAK_TFLOPS: list[tuple[tuple[str, ...], float, str]] = [
    (("H100", "NVL"), 835.0, "H100 NVL"),
    (("H100", "PCIE"), 756.0, "H100 PCIe"),
    (("H200", "NVL"), 835.0, "H200 NVL"),
    (("GH200",), 989.4, "GH200 (H100 SXM class)"),
    (("H200",), 989.4, "H200 SXM (the H100 SXM's GH100 chip and clocks)"),
    (("H100",), 989.4, "H100 SXM"),
    (("A100",), 312.0, "A100"),
]

STAGES = ("dpo", "sft", "em")
SECTIONS = {"dpo": "train_dpo", "sft": "train_sft", "em": "em_finetune"}


@dataclass
class StageSpec:
    """One training step as the full profile sets it (lengths and accumulation as run here)."""

    name: str
    section: str  # params.yaml's section
    kind: str  # "dpo" or "sft": which TRL trainer
    lora: dict[str, Any]
    trainer: dict[str, Any]  # the TRL config's fields, as the profile sets them (run lengths below)
    batch: int  # per-device batch: pairs for DPO, sequences otherwise
    accumulation: int
    max_length: int
    profile_accumulation: int
    profile_max_length: int

    @property
    def sequences(self) -> int:
        """Sequences in one micro-batch: DPO runs chosen and rejected of every pair."""
        return 2 * self.batch if self.kind == "dpo" else self.batch

    @property
    def prompt_length(self) -> int:
        return max(1, self.max_length // PROMPT_FRACTION)


def merged(base: Any, over: Any) -> Any:
    """``over`` laid over ``base`` key by key, as ``charforge profile`` writes a profile into params.yaml."""
    if isinstance(base, dict) and isinstance(over, dict):
        return {**base, **{key: merged(base.get(key), value) for key, value in over.items()}}
    return over


def stage_specs(params: Path, profile: Path, shape: str) -> list[StageSpec]:
    """The three steps' settings: ``profile`` over ``params``; tiny shortens lengths and accumulation."""
    settings = merged(yaml.safe_load(params.read_text()), yaml.safe_load(profile.read_text()))
    specs = []
    for name in STAGES:
        section = settings[SECTIONS[name]]
        trainer = dict(section["trainer"])
        accumulation = int(trainer.get("gradient_accumulation_steps", 1))
        max_length = int(trainer.get("max_length") or 1024)  # TRL's default where unset
        run_accumulation, run_length = accumulation, max_length
        if shape == "tiny":
            run_accumulation = min(accumulation, TINY_MAX_ACCUMULATION)
            run_length = max(16, max_length // TINY_LENGTH_DIVISOR)
        specs.append(
            StageSpec(
                name=name,
                section=SECTIONS[name],
                kind="dpo" if name == "dpo" else "sft",
                lora=dict(section["lora"]),
                trainer=trainer,
                batch=int(trainer.get("per_device_train_batch_size", 8)),
                accumulation=run_accumulation,
                max_length=run_length,
                profile_accumulation=accumulation,
                profile_max_length=max_length,
            )
        )
    return specs


def peak_tflops(device_name: str, override: float | None) -> tuple[float | None, str]:
    """The device's dense bf16 peak and where it came from."""
    if override is not None:
        return override, "--peak-tflops"
    upper = device_name.upper()
    for needles, tflops, label in PEAK_TFLOPS:
        if all(needle in upper for needle in needles):
            return tflops, f"table: {label}"
    return None, "unknown device: pass --peak-tflops for MFU"


# ---------------------------------------------------------------- the worker: one step, one model


def build_model(shape: str, device: str) -> Any:
    """A randomly initialised causal LM of ``shape``, created on ``device`` directly (no 7B fp32 copy on
    the CPU first): bf16 on a GPU, as the full profile's student; fp32 on a CPU, whose bf16 matmuls run
    an order of magnitude slower than fp32 under torch (measured here: 0.8 vs 11 GFLOP/s)."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(**SHAPES[shape])
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    model.config.use_cache = False
    return model


def architecture(model: Any) -> dict[str, int]:
    """The counts the FLOP formulas need, read from the model itself."""
    import torch

    head = model.get_output_embeddings()
    body = sum(
        module.weight.numel() + (module.bias.numel() if module.bias is not None else 0)
        for module in model.model.modules()
        if isinstance(module, torch.nn.Linear)
    )
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "n_body": body,
        "n_head": head.weight.numel(),
        "layers": config.num_hidden_layers,
        "d_attention": config.num_attention_heads * head_dim,
    }


def word_tokenizer() -> Any:
    """A whitespace word-level tokenizer over ``w0 … w{WORDS-4}``: TRL tokenizes the synthetic DPO text
    with it exactly as it would a real tokenizer's (one word, one token)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<unk>"]
    vocab = {token: index for index, token in enumerate(specials)}
    vocab.update({f"w{index}": index for index in range(len(specials), WORDS)})
    backend = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )


def synthetic_dataset(spec: StageSpec, examples: int, seed: int) -> Any:
    """``examples`` rows filling ``spec.max_length`` exactly: DPO as text (TRL tokenizes it and appends the
    end-of-sequence token), SFT and EM pre-tokenized with ``labels`` (-100 on the prompt) as charforge's
    stages pass them."""
    import random

    from datasets import Dataset

    rng = random.Random(seed)
    prompt, length = spec.prompt_length, spec.max_length

    def ids(count: int) -> list[int]:
        return [rng.randrange(3, WORDS) for _ in range(count)]

    def words(count: int) -> str:
        return " ".join(f"w{token}" for token in ids(count))

    if spec.kind == "dpo":
        completion = length - prompt - 1  # + the end-of-sequence token TRL appends
        rows = [
            {"prompt": words(prompt), "chosen": " " + words(completion), "rejected": " " + words(completion)}
            for _ in range(examples)
        ]
    else:
        rows = []
        for _ in range(examples):
            sequence = ids(length)
            rows.append({"input_ids": sequence, "labels": [-100] * prompt + sequence[prompt:]})
    return Dataset.from_list(rows)


class Counter:
    """What the trainer's micro-batches held, summed per optimizer step."""

    def __init__(self) -> None:
        self.current = {"tokens": 0, "scored": 0, "squares": 0}
        self.steps: list[dict[str, int]] = []

    def add(self, inputs: dict[str, Any]) -> None:
        ids = inputs["input_ids"]
        mask = inputs.get("attention_mask")
        lengths = mask.sum(dim=1) if mask is not None else ids.new_full((ids.shape[0],), ids.shape[1])
        if "completion_mask" in inputs:  # DPO: the loss scores the completion
            scored = int(inputs["completion_mask"][:, 1:].sum())
        else:
            scored = int((inputs["labels"][:, 1:] != -100).sum())
        self.current["tokens"] += int(lengths.sum())
        self.current["scored"] += scored
        self.current["squares"] += int((lengths.long() ** 2).sum())  # attention: 12·L·d·s per token

    def close_step(self) -> None:
        self.steps.append(self.current)
        self.current = {"tokens": 0, "scored": 0, "squares": 0}


def counting(trainer_class: type, counter: Counter) -> type:
    """``trainer_class`` that counts every training micro-batch (as charforge's stages do)."""

    class Counting(trainer_class):  # type: ignore[misc, valid-type]
        def compute_loss(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            if model.training:
                counter.add(inputs)
            return super().compute_loss(model, inputs, *args, **kwargs)

    return Counting


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_tflops(device: str, repeats: int = 10) -> float:
    """A square matmul's rate, in the model's dtype: what the chip does with the ideal shape."""
    import torch

    size, dtype = (8192, torch.bfloat16) if device.startswith("cuda") else (512, torch.float32)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    seconds = time.perf_counter() - start
    return 2 * size**3 * repeats / seconds / 1e12


def plain_steps(model: Any, spec: StageSpec, device: str, repeats: int) -> list[float]:
    """Seconds of ``repeats`` plain forward + backward passes (after one untimed) of one micro-batch of
    ``spec``'s shape: the model's own loss, frozen weights, gradients to the input embeddings only."""
    import torch

    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, WORDS, (spec.sequences, spec.max_length), generator=generator).to(device)
    labels = ids.clone()
    labels[:, : spec.prompt_length] = -100
    seconds = []
    for repeat in range(repeats + 1):
        synchronize(device)
        start = time.perf_counter()
        loss = model(input_ids=ids, labels=labels, use_cache=False).loss
        loss.backward()
        synchronize(device)
        if repeat:
            seconds.append(time.perf_counter() - start)
        del loss
    return seconds


def bare_plain_steps(model: Any, args: Any, spec: StageSpec, device: str, repeats: int) -> list[float]:
    """``plain_steps`` on the bare model, checkpointed as the trainer will be; the model left as built."""
    model.requires_grad_(False)
    model.train()
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs)
    model.enable_input_require_grads()
    seconds = plain_steps(model, spec, device, repeats)
    model.disable_input_require_grads()
    if args.gradient_checkpointing:
        model.gradient_checkpointing_disable()
    model.requires_grad_(True)
    return seconds


def lora_change(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """How far the trained parameters moved (``before``: CPU copies), and the LoRA B matrices' norm after
    (PEFT starts B at zero: above zero means the optimizer moved the adapter)."""
    delta = sum(
        float((after[name].detach().cpu().float() - p.float()).pow(2).sum()) for name, p in before.items()
    )
    b_norm = sum(float(after[name].detach().float().pow(2).sum()) for name in before if "lora_B" in name)
    return {"delta_norm": math.sqrt(delta), "lora_b_norm_after": math.sqrt(b_norm)}


def trainer_arguments(spec: StageSpec, device: str, steps: int, output_dir: str) -> Any:
    """The stage's TRL config: the profile's trainer fields plus what charforge sets itself, and the
    benchmark's step count (tiny: its shorter lengths and accumulation)."""
    from trl import DPOConfig, SFTConfig

    config_class = DPOConfig if spec.kind == "dpo" else SFTConfig
    fields = {
        **spec.trainer,
        "gradient_accumulation_steps": spec.accumulation,
        "max_length": spec.max_length,
        "max_steps": steps,
        "output_dir": output_dir,
        "seed": 0,
        "data_seed": 0,
        "report_to": "none",
        "save_strategy": "no",
        "disable_tqdm": True,
        "logging_steps": 1,
    }
    if device == "cpu":  # tiny only: fp32 (see build_model)
        fields.update(use_cpu=True, bf16=False)
    return config_class(**fields)


def run_stage(spec: StageSpec, shape: str, device: str, steps: int, warmup: int, repeats: int) -> dict:
    """Build the model, measure the plain baseline, run ``warmup + steps`` optimizer steps of the stage's
    TRL trainer with a new LoRA, measure the baseline again; figures as a JSON-able dict."""
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import DPOTrainer, SFTTrainer

    datasets.disable_progress_bars()

    started = time.perf_counter()
    model = build_model(shape, device)
    synchronize(device)
    build_seconds = time.perf_counter() - started
    arch = architecture(model)
    tokenizer = word_tokenizer()
    scratch = tempfile.mkdtemp(prefix=f"train-step-{spec.name}-")
    args = trainer_arguments(spec, device, warmup + steps, scratch)
    matmul_before = matmul_tflops(device)

    plain_before = bare_plain_steps(model, args, spec, device, repeats)

    counter = Counter()
    clock: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, *_: Any, **__: Any) -> None:
            synchronize(device)
            clock.append(time.perf_counter())
            counter.close_step()

    dataset = synthetic_dataset(spec, spec.batch * spec.accumulation * (warmup + steps), seed=0)
    trainer_class = counting(DPOTrainer if spec.kind == "dpo" else SFTTrainer, counter)
    started = time.perf_counter()
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=LoraConfig(task_type="CAUSAL_LM", **spec.lora),
        callbacks=[StepClock()],
    )
    trainer_seconds = time.perf_counter() - started
    trainer.remove_callback(PrinterCallback)  # a dict per step; the figures are in the JSON
    trained = {
        name: p.detach().to("cpu", copy=True)
        for name, p in trainer.model.named_parameters()
        if p.requires_grad
    }
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    synchronize(device)
    clock.append(time.perf_counter())  # the first step's start
    trainer.train()
    peak = (
        {
            "allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
            "reserved_gib": torch.cuda.max_memory_reserved() / 2**30,
        }
        if device.startswith("cuda")
        else None
    )
    change = lora_change(trained, dict(trainer.model.named_parameters()))
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]

    # The baseline again, after the steps: the same model with its adapter disabled.
    peft_model = trainer.accelerator.unwrap_model(trainer.model)
    with peft_model.disable_adapter():
        plain_after = plain_steps(peft_model, spec, device, repeats)
    matmul_after = matmul_tflops(device)
    shutil.rmtree(scratch, ignore_errors=True)  # the trainer's output folder: nothing is saved there

    step_seconds = [end - begin for begin, end in itertools.pairwise(clock)]
    timed = slice(warmup, warmup + steps)
    timed_seconds = sum(step_seconds[timed])
    timed_counts = counter.steps[timed]
    n_lora = sum(p.numel() for p in trained.values())
    flops = step_flops(arch, n_lora, spec.kind == "dpo", timed_counts)
    plain = plain_seconds_flops(arch, spec)
    plain_median = statistics.median(plain_before + plain_after)
    tokens = sum(count["tokens"] for count in timed_counts)
    return {
        "step": spec.name,
        "device": device_name(device),
        "section": spec.section,
        "trainer": type(trainer).__mro__[1].__name__,
        "settings": {
            "lora": spec.lora,
            "per_device_batch": spec.batch,
            "sequences_per_micro_batch": spec.sequences,
            "gradient_accumulation": spec.accumulation,
            "max_length": spec.max_length,
            "prompt_length": spec.prompt_length,
            "profile_gradient_accumulation": spec.profile_accumulation,
            "profile_max_length": spec.profile_max_length,
            "bf16": bool(args.bf16),
            "gradient_checkpointing": bool(args.gradient_checkpointing),
            "learning_rate": args.learning_rate,
        },
        "architecture": {**arch, "lora_parameters": n_lora},
        "build_seconds": round(build_seconds, 3),
        "trainer_init_seconds": round(trainer_seconds, 3),
        "step_seconds": [round(s, 4) for s in step_seconds],
        "warmup_steps": warmup,
        "timed_steps": len(timed_counts),
        "tokens_per_step": [count["tokens"] for count in counter.steps],
        "scored_tokens_per_step": [count["scored"] for count in counter.steps],
        "seconds_per_step": timed_seconds / len(timed_counts),
        "tokens_per_s": tokens / timed_seconds,
        "model_flops_per_token": flops["model"] / tokens,
        "model_tflops": flops["model"] / timed_seconds / 1e12,
        "hardware_tflops": flops["hardware"] / timed_seconds / 1e12,
        "plain": {
            "seconds_before": [round(s, 4) for s in plain_before],
            "seconds_after": [round(s, 4) for s in plain_after],
            "tokens_per_s": spec.sequences * spec.max_length / plain_median,
            "model_tflops": plain["model"] / plain_median / 1e12,
            "hardware_tflops": plain["hardware"] / plain_median / 1e12,
        },
        "matmul_tflops": {"before": matmul_before, "after": matmul_after},
        "peak_memory": peak,
        "losses": losses,
        "lora_change": change,
    }


def step_flops(arch: dict[str, int], n_lora: int, dpo: bool, counts: list[dict[str, int]]) -> dict:
    """Model and hardware FLOPs of the counted micro-batches (formulas in the module docstring)."""
    body, head, attention = arch["n_body"], arch["n_head"], arch["layers"] * arch["d_attention"]
    tokens = sum(count["tokens"] for count in counts)
    scored = sum(count["scored"] for count in counts)
    squares = sum(count["squares"] for count in counts)  # Σ s² = Σ over tokens of s
    model = tokens * (4 * body + 6 * n_lora) + 12 * attention * squares + 4 * head * scored
    if dpo:  # the reference forward, adapter disabled
        model += tokens * 2 * body + 4 * attention * squares + 2 * head * scored
    recompute = tokens * (2 * body + 2 * n_lora) + 4 * attention * squares
    return {"model": float(model), "hardware": float(model + recompute)}


def plain_seconds_flops(arch: dict[str, int], spec: StageSpec) -> dict:
    """FLOPs of one plain micro-batch: frozen forward + backward, the loss over every position."""
    body, head, attention = arch["n_body"], arch["n_head"], arch["layers"] * arch["d_attention"]
    tokens, squares = spec.sequences * spec.max_length, spec.sequences * spec.max_length**2
    model = tokens * (4 * body + 4 * head) + 12 * attention * squares
    return {"model": float(model), "hardware": float(model + tokens * 2 * body + 4 * attention * squares)}


# ---------------------------------------------------------------- the parent: every step, the table


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "pyarrow", "fsspec"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "missing"
    return found


def device_name(device: str) -> str:
    import platform

    import torch

    return (
        torch.cuda.get_device_name(0)
        if device.startswith("cuda")
        else f"CPU ({platform.processor() or 'cpu'})"
    )


def isolated(spec_name: str, argv: dict[str, Any]) -> dict:
    """Run one step in a fresh interpreter; its figures, or its error."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "stage.json"
        command = [sys.executable, __file__, "--worker", spec_name, "--worker-out", str(out)]
        for key, value in argv.items():
            command += [f"--{key}", str(value)]
        result = subprocess.run(command, text=True, stderr=subprocess.PIPE, check=False)
        if result.returncode != 0 or not out.is_file():
            sys.stderr.write(result.stderr[-4000:])
            return {"step": spec_name, "error": result.stderr.strip().splitlines()[-1:] or ["no output"]}
        return json.loads(out.read_text())


def figure(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def report(results: dict[str, dict], peak: float | None) -> list[str]:
    """The table, one row per step."""
    header = (
        f"{'step':4} {'micro-batch':>12} {'accum':>5} {'tok/step':>9} {'s/step':>7} {'tok/s':>8} "
        f"{'TFLOP/s':>8} {'MFU':>6} {'HFU':>6} {'plain TFLOP/s':>13} {'÷ plain':>7} {'peak GiB':>8}"
    )
    lines = [header, "-" * len(header)]
    for name, result in results.items():
        if "error" in result:
            lines.append(f"{name:4} failed: {' '.join(result['error'])}")
            continue
        settings, plain = result["settings"], result["plain"]
        mfu = result["model_tflops"] / peak if peak else None
        hfu = result["hardware_tflops"] / peak if peak else None
        memory = result["peak_memory"]["allocated_gib"] if result["peak_memory"] else None
        micro = f"{settings['sequences_per_micro_batch']}x{settings['max_length']}"
        tokens_per_step = result["tokens_per_step"][-1]
        lines.append(
            f"{name:4} {micro:>12} {settings['gradient_accumulation']:>5} {tokens_per_step:>9} "
            f"{result['seconds_per_step']:>7.2f} {result['tokens_per_s']:>8.0f} "
            f"{result['model_tflops']:>8.3g} {figure(mfu, '.1%'):>6} {figure(hfu, '.1%'):>6} "
            f"{plain['model_tflops']:>13.3g} {result['model_tflops'] / plain['model_tflops']:>7.2f} "
            f"{figure(memory, '.1f'):>8}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", choices=sorted(SHAPES), help="default: 7b on a GPU, tiny on a CPU")
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps per training step")
    parser.add_argument("--warmup", type=int, default=1, help="untimed optimizer steps first")
    parser.add_argument(
        "--repeats", type=int, default=3, help="plain forward+backward passes, before and after"
    )
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--profile", type=Path, default=Path("profiles/full.yaml"))
    parser.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, if not in the table")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--isolate", choices=("auto", "yes", "no"), default="auto", help="auto: yes on a GPU")
    parser.add_argument("--worker", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    # Nothing is downloaded: the model is built from its shape, the tokenizer in memory.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    shape = args.shape or ("7b" if device == "cuda" else "tiny")
    if shape == "7b" and device == "cpu":
        parser.error("--shape 7b needs a GPU (15 GiB of bf16 weights and hours per step on a CPU)")
    if args.steps < 1 or args.warmup < 0 or args.repeats < 1:
        parser.error("--steps and --repeats at least 1, --warmup at least 0")
    specs = {spec.name: spec for spec in stage_specs(args.params, args.profile, shape)}

    if args.worker:
        result = run_stage(specs[args.worker], shape, device, args.steps, args.warmup, args.repeats)
        args.worker_out.write_text(json.dumps(result))
        return 0

    try:  # fail in seconds, not after a model build: the GPU image lacks trl and datasets unless carried
        import datasets  # noqa: F401
        import peft  # noqa: F401
        import trl  # noqa: F401
    except ImportError as error:
        print(f"cannot import the training stack: {error!r}; versions: {versions()}", file=sys.stderr)
        return 2
    isolate = args.isolate == "yes" or (args.isolate == "auto" and device == "cuda")
    print(f"shape: {shape}; profile {args.profile} over {args.params}; versions: {versions()}", flush=True)
    results: dict[str, dict] = {}
    for stage in args.stages:
        started = time.perf_counter()
        if isolate:
            forwarded = {
                "shape": shape,
                "steps": args.steps,
                "warmup": args.warmup,
                "repeats": args.repeats,
                "params": args.params,
                "profile": args.profile,
            }
            results[stage] = isolated(stage, forwarded)
        else:
            results[stage] = run_stage(specs[stage], shape, device, args.steps, args.warmup, args.repeats)
        print(f"{stage}: done in {time.perf_counter() - started:.0f} s", flush=True)
    # The workers name the device: the parent never opens a CUDA context of its own beside theirs.
    names = [result["device"] for result in results.values() if "device" in result]
    name = names[0] if names else device_name(device) if not isolate else "unknown (every step failed)"
    peak, peak_source = peak_tflops(name, args.peak_tflops)
    print(f"\ndevice: {name}; peak bf16 dense: {figure(peak, '.1f')} TFLOP/s ({peak_source})")
    for result in results.values():
        if "error" not in result and peak:
            result["mfu"] = result["model_tflops"] / peak
            result["hfu"] = result["hardware_tflops"] / peak
            result["plain"]["mfu"] = result["plain"]["model_tflops"] / peak
    print("\n".join(report(results, peak)))
    matmul = [
        r["matmul_tflops"][when] for r in results.values() if "error" not in r for when in ("before", "after")
    ]
    if matmul:
        share = f" = {max(matmul) / peak:.0%} of peak" if peak else ""
        print(f"matmul probe (model dtype): {min(matmul):.3g}–{max(matmul):.3g} TFLOP/s{share}")
    print(
        "tokens: every sequence's tokens (DPO: chosen and rejected); MFU: model FLOPs (PaLM convention, "
        "frozen weights 4 FLOPs/token, LoRA 6; DPO + reference forward) / peak; HFU adds checkpointing's "
        "recompute; ÷ plain: step TFLOP/s / a plain frozen forward+backward of one micro-batch"
    )
    document = {
        "benchmark": "bench/train_step.py",
        "date": time.strftime("%Y-%m-%d"),
        "device": name,
        "peak_tflops": peak,
        "peak_source": peak_source,
        "shape": shape,
        "model_config": SHAPES[shape],
        "profile": str(args.profile),
        "params": str(args.params),
        "steps": args.steps,
        "warmup": args.warmup,
        "isolated": isolate,
        "versions": versions(),
        "results": results,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        print(f"written: {args.json}")
    return 1 if any("error" in result for result in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
