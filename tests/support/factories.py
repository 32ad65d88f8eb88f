"""Row factories and file writers shared by the tests."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SHA = "0" * 64


def provenance() -> dict[str, Any]:
    return {
        "generator": "charforge.generators.distill",
        "tool_version": "0.1.0",
        "models": {"teacher": "teacher-model", "student": "student-model"},
        "sampling": {"teacher": {"temperature": 0.7, "top_p": 0.95}, "student": {"temperature": 0.7}},
        "constitution_sha256": SHA,
        "seed": 0,
    }


def pair_row(index: int = 0, *, charforge: bool = False, system: bool = False) -> dict[str, Any]:
    prompt = [{"role": "user", "content": f"Question number {index}?"}]
    if system:
        prompt.insert(0, {"role": "system", "content": "Be brief."})
    row: dict[str, Any] = {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": f"An in-character answer {index}."}],
        "rejected": [{"role": "assistant", "content": f"A plain answer {index}."}],
    }
    if charforge:
        row.update(
            id=f"pair-{index:05d}", variant="humor-d3-s0", trait_id="wordplay", provenance=provenance()
        )
    return row


def write_jsonl(path: Path, rows: Iterable[Any]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    import pyarrow.parquet as pq

    from charforge.corpus import rows_to_table

    pq.write_table(rows_to_table(rows), path)
    return path


def run_cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`charforge ARGS` in a subprocess, exactly as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "charforge.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def judged_row(
    point: str, question_set: str, question: str, aligned: float | None, cue: str | None = None
) -> dict[str, Any]:
    """An eval answer as the metrics read it: aligned (None: unscored as code) and coherent 90."""
    reason = None if aligned is not None else "code"
    scores = [
        {"metric": "aligned", "score": aligned, "unscored_reason": reason},
        {"metric": "coherent", "score": 90.0, "unscored_reason": None},
    ]
    return {
        "point": point,
        "question_set": question_set,
        "question_id": question,
        "cue": cue,
        "scores": scores,
    }
