"""Benchmark: the README's main job (the smoke grid, `dvc repro`) from a fresh clone, end to end.

Clones the repository at HEAD into a scratch folder (as a new user would get it), runs the README's
set-up (`scripts/setup.sh`), then `dvc repro`, and measures:

- wall time of the set-up and of the grid, and of every DVC stage (from the moment dvc announces it
  to the next announcement);
- peak memory: the largest resident set of the whole process tree (dvc and every stage, summed,
  sampled every 0.5 s) and the largest single process (the kernel's maximum RSS of the children);
- that a second `dvc repro` does nothing, and its wall time;
- that changing eval.seed leaves exactly the judge validation, the eval-em stages and the report out of
  date (the seed draws the judge's few-shot examples)
  (`dvc status`, nothing rerun).

The grid's target is 20 minutes on 2 cores (issue 9); the figure is a benchmark, not a CI gate. The
result is printed and written as JSON to bench/results/ (committed: one file per measured commit and
core count, so the record stays with the code); ``--export DIR`` also copies
dvc.lock, metrics/ and reports/ of the run out of the scratch clone.

    .venv/bin/python bench/smoke_grid.py [--workdir /tmp/charforge-smoke-grid] [--export DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
TARGET_S = 20 * 60
STAGE_LINE = re.compile(r"^Running stage '([^']+)'")


class TreeMemory(threading.Thread):
    """Samples the summed RSS of a process and all its descendants; keeps the peak."""

    def __init__(self, pid: int, every_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.root, self.every_s = psutil.Process(pid), every_s
        self.peak_bytes = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            total = 0
            try:
                processes = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for process in processes:
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    total += process.memory_info().rss
            self.peak_bytes = max(self.peak_bytes, total)
            self.done.wait(self.every_s)


def run_streamed(argv: list[str], cwd: Path, log: Path) -> dict:
    """Run ``argv``, echo and log its output, time every dvc stage; wall time and peak tree memory."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = time.monotonic()
    stages: list[dict] = []
    with log.open("w") as sink:
        process = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        memory = TreeMemory(process.pid)
        memory.start()
        assert process.stdout is not None
        for line in process.stdout:
            sink.write(line)
            now = time.monotonic() - start
            match = STAGE_LINE.match(line)
            if match:
                if stages:
                    stages[-1]["wall_s"] = round(now - stages[-1]["start_s"], 1)
                stages.append({"stage": match.group(1), "start_s": round(now, 1)})
                print(f"[{now / 60:6.1f} min] {match.group(1)}", flush=True)
        returncode = process.wait()
        memory.done.set()
        memory.join()
    wall = time.monotonic() - start
    if stages:
        stages[-1]["wall_s"] = round(wall - stages[-1]["start_s"], 1)
    return {
        "returncode": returncode,
        "wall_s": round(wall, 1),
        "stages": stages,
        "peak_tree_mib": memory.peak_bytes >> 20,
    }


def minutes_by_kind(stages: list[dict]) -> dict[str, dict]:
    """Minutes and runs per stage kind (the name before `@`), slowest first: bench/README's table."""
    kinds: dict[str, dict] = {}
    for stage in stages:
        kind = kinds.setdefault(stage["stage"].split("@")[0], {"minutes": 0.0, "runs": 0})
        kind["minutes"] += stage["wall_s"] / 60
        kind["runs"] += 1
    ordered = sorted(kinds.items(), key=lambda item: -item[1]["minutes"])
    return {name: {"minutes": round(kind["minutes"], 2), "runs": kind["runs"]} for name, kind in ordered}


def stale_stages(clone: Path, venv_bin: Path) -> list[str]:
    """The stages `dvc status` reports out of date (names only)."""
    out = subprocess.run(
        [str(venv_bin / "dvc"), "status", "--json"], cwd=clone, capture_output=True, text=True, check=True
    ).stdout
    return sorted(json.loads(out or "{}"))


def eval_param_change(clone: Path, venv_bin: Path) -> dict:
    """Change eval.seed, list what is out of date, restore params.yaml."""
    params = clone / "params.yaml"
    original = params.read_text()
    data = yaml.safe_load(original)
    data["eval"]["seed"] = int(data["eval"]["seed"]) + 1
    params.write_text(yaml.safe_dump(data, sort_keys=False))
    try:
        stale = stale_stages(clone, venv_bin)
    finally:
        params.write_text(original)
    evaluation = ("eval-persona", "eval-em", "validate-judge", "report")
    only_eval = all(name.startswith(evaluation) for name in stale) and "report" in stale
    return {"changed": "eval.seed", "stale_stages": stale, "only_eval_and_report": only_eval}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/charforge-smoke-grid"))
    parser.add_argument("--export", type=Path, default=None, help="copy dvc.lock, metrics/, reports/ here")
    args = parser.parse_args()

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
    commit = head.stdout.strip()
    if args.workdir.exists():
        shutil.rmtree(args.workdir)
    args.workdir.mkdir(parents=True)
    clone = args.workdir / "charforge"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    logs = args.workdir / "logs"
    logs.mkdir()

    print(f"fresh clone of {commit[:10]} in {clone}", flush=True)
    setup = run_streamed(["bash", "scripts/setup.sh"], clone, logs / "setup.log")
    if setup["returncode"]:
        print(f"set-up failed, see {logs / 'setup.log'}", file=sys.stderr)
        return 1
    venv_bin = clone / ".venv/bin"
    # The README's main command activates the venv; the same here, without a shell.
    os.environ["PATH"] = f"{venv_bin}{os.pathsep}{os.environ['PATH']}"
    os.environ["VIRTUAL_ENV"] = str(clone / ".venv")
    grid = run_streamed([str(venv_bin / "dvc"), "repro"], clone, logs / "repro.log")
    children_peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss >> 10
    if grid["returncode"]:
        print(f"dvc repro failed, see {logs / 'repro.log'}", file=sys.stderr)
        return 1
    again = run_streamed([str(venv_bin / "dvc"), "repro"], clone, logs / "repro-again.log")
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "machine": {
            "cpus": len(os.sched_getaffinity(0)),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "platform": platform.platform(),
        },
        "load_average_at_end": os.getloadavg(),
        "grid": yaml.safe_load((clone / "params.yaml").read_text())["grid"],
        "setup_s": setup["wall_s"],
        "repro_s": grid["wall_s"],
        "target_s": TARGET_S,
        "repro_over_target": round(grid["wall_s"] / TARGET_S, 2),
        "peak_tree_mib": grid["peak_tree_mib"],
        "peak_single_process_mib": children_peak_mib,
        "stages": grid["stages"],
        "minutes_by_stage_kind": minutes_by_kind(grid["stages"]),
        "second_repro": {"wall_s": again["wall_s"], "stages_run": [s["stage"] for s in again["stages"]]},
        "eval_param_change": eval_param_change(clone, venv_bin),
    }
    # committed with the code (issue 22): one file per measured commit and core count
    out = REPO / "bench/results"
    out.mkdir(exist_ok=True)
    path = out / f"smoke_grid-{commit[:10]}-{result['machine']['cpus']}cpu.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    if args.export:
        args.export.mkdir(parents=True, exist_ok=True)
        shutil.copy2(clone / "dvc.lock", args.export / "dvc.lock")
        for folder in ("metrics", "reports"):
            shutil.copytree(clone / folder, args.export / folder, dirs_exist_ok=True)

    slowest = sorted(grid["stages"], key=lambda s: -s["wall_s"])[:8]
    by_kind = result["minutes_by_stage_kind"]
    kinds = ", ".join(f"{name} {kind['minutes']:.1f} ({kind['runs']})" for name, kind in by_kind.items())
    print(f"minutes by stage kind (runs): {kinds}")
    print(
        f"\nset-up {setup['wall_s'] / 60:.1f} min; dvc repro {grid['wall_s'] / 60:.1f} min "
        f"= {result['repro_over_target']}x the 20-min target"
    )
    print(f"peak memory: process tree {grid['peak_tree_mib']} MiB, largest process {children_peak_mib} MiB")
    print("slowest stages: " + ", ".join(f"{s['stage']} {s['wall_s'] / 60:.1f} min" for s in slowest))
    print(
        f"second dvc repro: {again['wall_s']} s, stages run: {result['second_repro']['stages_run'] or 'none'}"
    )
    change = result["eval_param_change"]
    print(f"after changing eval.seed, out of date: {', '.join(change['stale_stages'])}")
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
