"""Benchmark: the smoke grid's generation shapes on the transformers backend vs vLLM's CPU backend.

Each measurement is one stage-like unit in a fresh subprocess: import the backend, build the role's LLM
and load it (for vLLM: start the engine), generate the shape, unload. The child times import, load
and generate itself, in wall and in CPU seconds (all threads); the parent times the whole subprocess
(``wall``: interpreter start to exit).
Backends run interleaved, in a rotated order each repeat, so the ratios to transformers fp32 hold up
on a busy machine even when the absolute seconds do not.

Shapes (the smoke grid's generation calls; SmolLM2-135M-Instruct, 16 chats per ``generate`` call):

- ``teacher``: 12 chats = the goodness constitution's teacher system prompt (~490 tokens, the same for
  all) + one of its trait questions; 96 new tokens, temperature 0.7, top_p 0.95.
- ``student``: the same 12 questions with no system prompt; 96 new tokens, temperature 0.7.
- ``eval``: 16 short questions (the 12 EM question paraphrases + 4 benign prompts), 2 samples each;
  64 new tokens, temperature 1.0, top_p 1.0.

Backends: ``tf-fp32`` / ``tf-bf16`` (transformers, float32 / bfloat16), ``vllm-bf16`` / ``vllm-fp32``
(vLLM CPU, the in-process ``uni`` executor with ``VLLM_ENABLE_V1_MULTIPROCESSING=0``, prefix caching
on) and ``vllm-bf16-nopc`` (prefix caching off). Also checks that every repeat of a backend generated
the same text (same seed), and reports each child's peak RSS.

    .venv/bin/python bench/generation_backends.py [--repeats 3] [--shapes teacher,student,eval]
        [--backends tf-fp32,tf-bf16,vllm-bf16,vllm-fp32] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODEL = "embedded:smollm2-135m-instruct"
BATCH_SIZE = 16  # generation.batch_size in the smoke profile
PROMPTS = 12  # a smoke variant's prompts: prompts_per_trait 6 x max_traits 2
# name -> (backend, generation dtype, the role's extra: engine arguments for vLLM). The in-process
# ``uni`` executor starts the CPU engine far faster than the default one (opt-in: see docs/design.md §6).
VLLM_FAST = {"distributed_executor_backend": "uni", "max_model_len": 2048}
BACKENDS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "tf-fp32": ("transformers", "float32", {}),
    "tf-bf16": ("transformers", "bfloat16", {}),
    "vllm-bf16": ("vllm", "bfloat16", {**VLLM_FAST, "enable_prefix_caching": True}),
    "vllm-fp32": ("vllm", "float32", {**VLLM_FAST, "enable_prefix_caching": True}),
    "vllm-bf16-nopc": ("vllm", "bfloat16", {**VLLM_FAST, "enable_prefix_caching": False}),
}
SHAPES = ("teacher", "student", "eval")
BASELINE = "tf-fp32"
VLLM_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB; the default asks for most of the RAM
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # the engine core in this process: no fork, fast start
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


def read_yaml(path: Path) -> Any:
    import yaml

    return yaml.safe_load(path.read_text())


def shape_inputs(shape: str) -> tuple[list[list[dict[str, str]]], int, dict[str, Any]]:
    """The chats, samples per chat and sampling of one shape."""
    if shape == "eval":
        questions = read_yaml(ROOT / "corpora" / "em" / "questions.yaml")
        texts = [text for question in questions for text in question["paraphrases"]]  # 12
        texts += read_yaml(ROOT / "corpora" / "benign" / "prompts.yaml")["prompts"][: 16 - len(texts)]
        sampling = {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 64}
        return [[{"role": "user", "content": text}] for text in texts], 2, sampling
    from charforge.generators.distill import teacher_system_prompt
    from charforge.schemas import Constitution

    constitution = Constitution.model_validate(
        read_yaml(ROOT / "corpora" / "constitutions" / "goodness.yaml")
    )
    questions = [question for trait in constitution.traits for question in trait.questions][:PROMPTS]
    sampling = {"temperature": 0.7, "top_p": 0.95, "max_new_tokens": 96}
    chats = [[{"role": "user", "content": question}] for question in questions]
    if shape == "teacher":
        system = {"role": "system", "content": teacher_system_prompt(constitution)}
        chats = [[system, *chat] for chat in chats]
    return chats, 1, sampling


def child(backend: str, shape: str) -> dict[str, Any]:
    """One measurement: import, load, generate ``shape``, unload; returns timings, texts and tokens."""
    start, start_cpu = time.perf_counter(), time.process_time()
    name, dtype, extra = BACKENDS[backend]
    if name == "vllm":
        import vllm  # noqa: F401
    else:
        import distilabel.models.llms  # noqa: F401
        import transformers  # noqa: F401
    from charforge.generators.llm import build_llm
    from charforge.schemas.params import ModelRole

    chats, samples, sampling = shape_inputs(shape)
    role = ModelRole(backend=name, model=MODEL, sampling=sampling, generation_dtype=dtype, extra=extra)
    loading, loading_cpu = time.perf_counter(), time.process_time()
    llm = build_llm(role, seed=0)
    llm.load()
    generating, generating_cpu = time.perf_counter(), time.process_time()
    texts: list[str] = []
    tokens = 0
    for offset in range(0, len(chats), BATCH_SIZE):
        batch = chats[offset : offset + BATCH_SIZE]
        for output in llm.generate(inputs=batch, num_generations=samples, **llm.generation_kwargs):
            texts += [text or "" for text in output["generations"]]
            tokens += sum(output["statistics"]["output_tokens"])
    done, done_cpu = time.perf_counter(), time.process_time()
    llm.unload()
    own, children = (
        resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return {
        "import_s": loading - start,
        "load_s": generating - loading,
        "generate_s": done - generating,
        "total_s": done - loading,
        # CPU seconds (all threads): less sensitive than wall time to other work on the machine
        "import_cpu_s": loading_cpu - start_cpu,
        "load_cpu_s": generating_cpu - loading_cpu,
        "generate_cpu_s": done_cpu - generating_cpu,
        "total_cpu_s": done_cpu - loading_cpu,
        "tokens": tokens,
        "texts": texts,
        "peak_rss_mib": max(own, children) / 1024,
    }


def measure(backend: str, shape: str, workdir: Path, timeout: float) -> dict[str, Any]:
    """Run one child; its result, plus ``wall_s`` (the whole subprocess) or ``error``."""
    out = workdir / f"{backend}-{shape}.json"
    out.unlink(missing_ok=True)
    command = [sys.executable, __file__, "--child", backend, shape, "--result", str(out)]
    env = {**VLLM_ENV, **os.environ}
    env.setdefault("CHARFORGE_CACHE", str(workdir / "cache"))  # converted model: $CHARFORGE_CACHE or scratch
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - start
    if done.returncode != 0 or not out.is_file():
        return {"error": f"exit {done.returncode}: {done.stderr.strip()[-2000:]}"}
    return {**json.loads(out.read_text()), "wall_s": wall}


def median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def report(
    results: dict[tuple[str, str], list[dict[str, Any]]], backends: list[str], shapes: list[str]
) -> None:
    """A table of medians per shape and backend. ``x total``: median total (load + generate) over the
    baseline's; ``x cpu``: the same in CPU seconds, which other work on the machine disturbs less."""
    header = f"{'shape':8} {'backend':15} {'n':>2} {'import':>7} {'load':>7} {'gen':>7} {'total':>7} "
    header += f"{'wall':>7} {'cpu':>7} {'tok/s':>7} {'x total':>8} {'x cpu':>6} {'RSS MiB':>8} same-text"
    print(header)
    for shape in shapes:
        base = [run for run in results.get((BASELINE, shape), []) if "error" not in run]
        for backend in backends:
            runs = results.get((backend, shape), [])
            ok = [run for run in runs if "error" not in run]
            if not ok:
                error = runs[0]["error"].splitlines()[-1] if runs else "not run"
                print(f"{shape:8} {backend:15} failed: {error}")
                continue
            total, cpu = median(ok, "total_s"), median(ok, "total_cpu_s")
            ratio = f"{total / median(base, 'total_s'):8.2f}" if base else f"{'-':>8}"
            cpu_ratio = f"{cpu / median(base, 'total_cpu_s'):6.2f}" if base else f"{'-':>6}"
            rate = statistics.median(run["tokens"] / run["generate_s"] for run in ok)
            same = all(run["texts"] == ok[0]["texts"] for run in ok) if len(ok) > 1 else None
            print(
                f"{shape:8} {backend:15} {len(ok):2d} {median(ok, 'import_s'):7.1f} "
                f"{median(ok, 'load_s'):7.1f} {median(ok, 'generate_s'):7.1f} {total:7.1f} "
                f"{median(ok, 'wall_s'):7.1f} {cpu:7.1f} {rate:7.1f} {ratio} {cpu_ratio} "
                f"{max(run['peak_rss_mib'] for run in ok):8.0f} {same}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--backends", default="tf-fp32,tf-bf16,vllm-bf16,vllm-fp32")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per measurement")
    parser.add_argument("--no-warmup", action="store_true", help="skip the untimed first run")
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    parser.add_argument("--child", nargs=2, metavar=("BACKEND", "SHAPE"), help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:  # a child: one measurement
        args.result.write_text(json.dumps(child(*args.child)))
        return

    shapes, backends = args.shapes.split(","), args.backends.split(",")
    unknown = sorted({*shapes} - {*SHAPES}) + sorted({*backends} - BACKENDS.keys())
    if unknown:
        raise SystemExit(f"unknown shape or backend: {', '.join(unknown)}")
    if BASELINE not in backends:
        backends.insert(0, BASELINE)
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-backends-") as tmp:
        workdir = Path(tmp)
        if not args.no_warmup:
            warm = measure(BASELINE, "eval", workdir, args.timeout)  # converts the model, fills the OS cache
            if "error" in warm:
                raise SystemExit(f"warm-up failed: {warm['error']}")
        for repeat in range(args.repeats):
            order = backends[repeat % len(backends) :] + backends[: repeat % len(backends)]
            for shape in shapes:
                for backend in order:
                    run = measure(backend, shape, workdir, args.timeout)
                    results.setdefault((backend, shape), []).append(run)
                    summary = run.get("error", "").splitlines()[-1:] or [
                        f"load {run['load_s']:.1f} s, generate {run['generate_s']:.1f} s, "
                        f"{run['tokens']} tokens, wall {run['wall_s']:.1f} s"
                    ]
                    print(f"[{repeat + 1}/{args.repeats}] {shape} {backend}: {summary[0]}", flush=True)
    report(results, backends, shapes)
    if args.json:
        rows = [{"backend": b, "shape": s, "runs": runs} for (b, s), runs in results.items()]
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
