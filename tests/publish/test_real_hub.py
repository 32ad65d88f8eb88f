"""Opt-in: publish to the real Hugging Face Hub, load it back, republish without a new commit.

Runs only with CHARFORGE_REAL_HUB=1, HF_TOKEN and CHARFORGE_REAL_HUB_REPO=ORG/NAME (a private dataset repo
is created there if missing; use a scratch repo). Publish and load run in subprocesses: this process
keeps the offline environment and the loopback-only network guard.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from charforge.schemas import Manifest

REPO_ID = os.environ.get("CHARFORGE_REAL_HUB_REPO", "")
pytestmark = pytest.mark.skipif(
    not (os.environ.get("CHARFORGE_REAL_HUB") == "1" and os.environ.get("HF_TOKEN") and REPO_ID),
    reason="opt-in: set CHARFORGE_REAL_HUB=1, HF_TOKEN and CHARFORGE_REAL_HUB_REPO=ORG/NAME",
)
LOAD = r"""
import json, sys
import datasets
from charforge.corpus import content_sha256
rows = datasets.load_dataset(sys.argv[1], sys.argv[2], split="train").to_list()
print(json.dumps([len(rows), content_sha256(rows)]))
"""


def test_publish_to_the_real_hub(project: Path, tmp_path: Path, run_charforge) -> None:
    hidden = {"HF_HUB_OFFLINE", "HF_ENDPOINT", "HF_HUB_DISABLE_XET"}
    env = {name: value for name, value in os.environ.items() if name not in hidden}
    env["HF_HOME"] = str(tmp_path / "hf-home")
    first = run_charforge(project, env, "publish", "plain-lora-s0", "--repo-id", REPO_ID, "--private")
    assert first.returncode == 0, first.stderr
    loaded = subprocess.run(
        [sys.executable, "-c", LOAD, REPO_ID, "plain-lora-s0-control"],
        env={**env, "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    manifest = Manifest.model_validate_json(
        (project / "corpora/build/plain-lora-s0/control.manifest.json").read_text()
    )
    assert json.loads(loaded.stdout.strip().splitlines()[-1]) == [manifest.rows, manifest.content_sha256]
    second = run_charforge(project, env, "publish", "plain-lora-s0", "--repo-id", REPO_ID, "--private")
    assert second.returncode == 0 and "no new commit" in second.stderr, second.stderr
    token = os.environ["HF_TOKEN"]
    for text in (first.stdout, first.stderr, second.stdout, second.stderr, loaded.stdout, loaded.stderr):
        assert token not in text
