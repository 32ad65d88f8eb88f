"""The pipeline runner: the same DAG gives the same rows on distilabel's local runner and on a private
local Ray instance (docs/design.md §6, scale-out).

The Ray run happens in a subprocess in its own session: a bounded wait, and every process Ray started
can be found (and, on a timeout, ended) by session id without touching anything else on the machine.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support.processes import end_session, start_group

from charforge.generators.llm import build_llm
from charforge.generators.pipeline import charforge_pipeline, for_config, run_pipeline
from charforge.schemas.params import GenerationConfig, ModelRole

PROMPTS = ["hello", "How are you today?", "I am fine, thank you.", "What is honesty?", "Be kind.", "Why?"]
RAY_TIMEOUT_S = 300  # ~35 s on 2 idle cores: Ray starts in ~6 s, each step's actor imports torch
EXIT_GRACE_S = 30  # Ray's workers notice their raylet has gone within a few seconds
LOG_TAIL_CHARS = 6000

# Runs in a subprocess: this file's run_rows on the given runner; on Ray, checks run_pipeline shut it
# down. The local run is a subprocess too: distilabel forks its workers, and a fork of a process that
# already ran torch (as the pytest process has, in other tests) can crash in OpenMP.
RUN_SCRIPT = """
import importlib.util, json, sys
from pathlib import Path
test_file, model, cache, runner, out = sys.argv[1:]
sys.path.insert(0, str(Path(test_file).resolve().parents[1]))  # tests/, for support
spec = importlib.util.spec_from_file_location("charforge_test_pipeline", test_file)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
rows = module.run_rows(Path(model), Path(cache), runner)
if runner == "ray":
    import ray
    assert not ray.is_initialized(), "run_pipeline left Ray running"
Path(out).write_text(json.dumps(rows))
"""


@pytest.fixture(autouse=True)
def _own_distilabel_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # charforge_pipeline sets DISTILABEL_CACHE_DIR if unset; keep that from outliving the test
    monkeypatch.setenv("DISTILABEL_CACHE_DIR", str(tmp_path / "distilabel"))


def run_rows(model: Path, cache: Path, runner: str) -> list[dict[str, Any]]:
    """A small pipeline on ``runner``: six prompts in two batches, greedy, then seeded sampling.

    The tiny model's greedy text is the same for every prompt; the sampled text differs per row (the
    backend seeds each batch from its content), so rows swapped or misaligned by a runner would show.
    """
    from distilabel.steps import LoadDataFromDicts
    from distilabel.steps.tasks import TextGeneration

    greedy = ModelRole(model=str(model), sampling={"temperature": 0, "max_new_tokens": 8})
    sampled = ModelRole(model=str(model), sampling={"temperature": 1.0, "max_new_tokens": 8})
    with charforge_pipeline("test-pipeline", cache=cache) as pipeline:
        load = LoadDataFromDicts(data=[{"instruction": p} for p in PROMPTS], batch_size=4)
        # the second step writes "generation" too: the first renames its own
        first = TextGeneration(
            name="greedy",
            llm=build_llm(greedy),
            input_batch_size=4,
            output_mappings={"generation": "greedy", "model_name": "greedy_model"},
        )
        second = TextGeneration(name="sampled", llm=build_llm(sampled, seed=7), input_batch_size=4)
        load >> first >> second
    distiset = run_pipeline(pipeline, GenerationConfig(pipeline=runner), use_cache=False)
    return [
        {"instruction": row["instruction"], "greedy": row["greedy"], "sampled": row["generation"]}
        for row in distiset["default"]["train"]
    ]


def start_run(model: Path, workdir: Path, runner: str = "ray") -> subprocess.Popen:
    """run_rows(..., runner) in a subprocess leading its own session, so that its processes (Ray's
    included) are ours to find: they must be gone soon after it exits, and on a timeout are killed."""
    workdir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-c", RUN_SCRIPT, __file__, str(model), str(workdir / "cache"), runner]
    with (workdir / "run.log").open("wb") as sink:
        return start_group(
            [*command, str(workdir / "rows.json")], cwd=workdir, stdout=sink, stderr=subprocess.STDOUT
        )


def run_result(proc: subprocess.Popen, workdir: Path) -> list[dict[str, Any]]:
    """The rows of a run from ``start_run``, once it has ended and its processes with it."""
    out, log = workdir / "rows.json", workdir / "run.log"
    timed_out = False
    try:
        proc.wait(timeout=RAY_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:  # after a timeout or an interrupt nothing is waited for
        left = end_session(proc.pid, EXIT_GRACE_S if proc.poll() is not None else 0)
        proc.wait()
    tail = log.read_text(errors="replace")[-LOG_TAIL_CHARS:]
    assert not timed_out, f"the run took over {RAY_TIMEOUT_S} s:\n{tail}"
    assert proc.returncode == 0, f"the run failed (rc {proc.returncode}):\n{tail}"
    assert not left, f"processes outlived the run by {EXIT_GRACE_S} s: {left}"
    return json.loads(out.read_text())


def test_local_runner_is_the_pipeline_itself(tmp_path: Path) -> None:
    with charforge_pipeline("test-local", cache=tmp_path) as pipeline:
        pass
    assert for_config(pipeline, GenerationConfig(pipeline="local")) is pipeline


def test_ray_runner_gives_the_local_rows(tiny_model: Path, tmp_path: Path) -> None:
    if importlib.util.find_spec("ray") is None:
        pytest.skip("generation.pipeline: ray needs the ray extra, which is not installed")
    # Ray mostly waits on its workers: overlap the two runs
    ray_run = start_run(tiny_model, tmp_path / "ray", "ray")
    local_run = start_run(tiny_model, tmp_path / "local", "local")
    try:
        local = run_result(local_run, tmp_path / "local")
    except BaseException:
        end_session(ray_run.pid, 0)
        ray_run.wait()
        raise
    on_ray = run_result(ray_run, tmp_path / "ray")
    assert [row["instruction"] for row in local] == PROMPTS
    assert all(isinstance(row["greedy"], str) and row["greedy"] for row in local)
    assert len({row["sampled"] for row in local}) > 1
    assert on_ray == local


def loader_rows(cache: Path) -> list[dict[str, Any]]:
    """A pipeline of no model (a loader and a column filter), run with its cache in ``cache``."""
    from distilabel.steps import KeepColumns, LoadDataFromDicts

    with charforge_pipeline("test-killed", cache=cache) as pipeline:
        load = LoadDataFromDicts(data=[{"instruction": p, "drop": 1} for p in PROMPTS], batch_size=4)
        load >> KeepColumns(columns=["instruction"])
    return list(run_pipeline(pipeline, GenerationConfig())["default"]["train"])


def test_a_killed_runs_cache_is_discarded_even_when_cut_mid_write(tmp_path: Path) -> None:
    # CI saw a SIGKILL land while distilabel wrote its pipeline.yaml: the rerun, which distilabel makes
    # read that file even without the cache, died on the empty file. Here the kill is staged exactly,
    # with a step batch cut mid-write too.
    first = loader_rows(tmp_path)
    assert first == [{"instruction": p} for p in PROMPTS]
    assert not list(tmp_path.rglob("charforge-unfinished"))
    [pipeline_file] = tmp_path.rglob("pipeline.yaml")
    batches = sorted(tmp_path.rglob("steps_data/*/batch_*.json"))
    assert batches
    for cut in (pipeline_file, batches[0]):
        cut.write_text("")
    (pipeline_file.parent / "charforge-unfinished").touch()
    with pytest.warns(UserWarning, match="last run was killed"):
        again = loader_rows(tmp_path)
    assert again == first
    assert not list(tmp_path.rglob("charforge-unfinished"))
    assert pipeline_file.read_text()  # written anew
    # a cut step batch would never be rewritten (distilabel skips files that exist) and a later cached
    # run would read it
    for batch in tmp_path.rglob("steps_data/*/batch_*.json"):
        json.loads(batch.read_text())
