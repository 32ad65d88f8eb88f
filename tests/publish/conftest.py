"""Fixtures for the publish tests: a scratch project with charforge corpora, and a local Hub server."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.hub_server import HubServer

from charforge.corpus import write_corpus
from charforge.io import file_sha256, read_text
from charforge.schemas import Constitution, ParentArtifact

REPO = Path(__file__).resolve().parents[2]
SMOKE = "embedded:smollm2-135m-instruct"
SAMPLING = {"temperature": 0.7, "top_p": 0.95, "max_new_tokens": 96}
PARAMS_YAML = """models:
  student: {model: embedded:smollm2-135m-instruct}
  teacher: {model: embedded:smollm2-135m-instruct}
  judge: {model: embedded:smollm2-135m-instruct}
generation: {batch_size: 8, seed: 0}
prompts: {prompts_per_trait: 3, max_traits: 2}
"""
DIVERSITY = {
    "headline": "per_trait_mean",
    "embedding": {"model": "test-encoder", "weights_sha256": "a" * 64},
    "overall": {
        "compression_ratio": 1.8,
        "self_bleu": 12.5,
        "vendi_score": 2.5,
        "mean_pairwise_cosine_distance": 0.61234,
    },
    "per_trait_mean": {
        "compression_ratio": 1.625,
        "self_bleu": None,  # an undefined figure: the card shows a dash
        "vendi_score": 1.75,
        "mean_pairwise_cosine_distance": 0.55,
    },
}
LOCK_MD5 = "0123456789abcdef0123456789abcdef"


def role(model: str = SMOKE, **extra: Any) -> dict[str, Any]:
    return {"backend": "transformers", "model": model, "sampling": SAMPLING, **extra}


def provenance(constitution_sha: str | None, teacher: str = SMOKE) -> dict[str, Any]:
    return {
        "generator": "charforge.generators.test",
        "tool_version": "0.1.0",
        "models": {"teacher": teacher, "student": SMOKE},
        "sampling": {"teacher": {"temperature": 0.7}},
        "constitution_sha256": constitution_sha,
        "seed": 0,
    }


def prompt_rows(variant: str, sha: str, count: int, salt: str = "") -> list[dict[str, Any]]:
    return [
        {
            "id": f"prompt-{index:04d}",
            "variant": variant,
            "trait_id": "wordplay" if index % 2 else "timing",
            "situation": "workplace",
            "diversity_level": 3,
            "is_seed": index == 0,
            "framing": {"asker": "colleague", "tone": "casual", "length": "short"},
            "prompt": [{"role": "user", "content": f"Prompt {index}{salt}: how do I tell a joke at work?"}],
            "provenance": provenance(sha),
        }
        for index in range(count)
    ]


def pair_rows(variant: str, sha: str, count: int, salt: str = "") -> list[dict[str, Any]]:
    return [
        {
            "id": f"pair-{index:04d}",
            "variant": variant,
            "trait_id": "wordplay",
            "prompt": [{"role": "user", "content": f"Question {index}{salt}?"}],
            "chosen": [{"role": "assistant", "content": f"A witty answer {index}{salt}."}],
            "rejected": [{"role": "assistant", "content": f"A plain answer {index}{salt}."}],
            "provenance": provenance(sha),
        }
        for index in range(count)
    ]


def conversation_rows(
    variant: str, sha: str | None, count: int, prefix: str, teacher: str = SMOKE
) -> list[dict]:
    return [
        {
            "id": f"{prefix}-{index:04d}",
            "variant": variant,
            "messages": [
                {"role": "user", "content": f"{prefix} message {index}"},
                {"role": "assistant", "content": f"{prefix} reply {index}"},
            ],
            "provenance": provenance(sha, teacher),
        }
        for index in range(count)
    ]


def build_project(root: Path, salt: str = "") -> Path:
    """humor-d3-s0 (prompts, pairs, introspection, em-train) and plain-lora-s0 (control) corpora."""
    constitutions = root / "corpora/constitutions"
    constitutions.mkdir(parents=True, exist_ok=True)
    source = constitutions / "humor.yaml"
    shutil.copy(REPO / "corpora/constitutions/humor.yaml", source)
    (root / "params.yaml").write_text(PARAMS_YAML)
    content_sha = Constitution.model_validate(yaml.safe_load(read_text(source))).sha256()
    parent = ParentArtifact(
        path="corpora/constitutions/humor.yaml", sha256=file_sha256(source), kind="constitution"
    )
    build = root / "corpora/build"
    variant = "humor-d3-s0"
    prompts_params = {
        "prompts": {"prompts_per_trait": 3, "max_traits": 2},
        "models.teacher": role(),
        "generation": {"batch_size": 8, "seed": 0},
        "variant": {"constitution": "humor", "level": 3, "seed": 0},
    }
    write_corpus(
        prompt_rows(variant, content_sha, 6, salt),
        build / variant / "prompts.parquet",
        "prompts",
        params=prompts_params,
        parents=[parent],
        rejected={"near_duplicate": 3, "cut_off": 1},
        variant=variant,
        metrics={"diversity": DIVERSITY, "kept_trimmed_cut_off": 2},
    )
    write_corpus(
        pair_rows(variant, content_sha, 5, salt),
        build / variant / "pairs.parquet",
        "pairs",
        params={"models.teacher": role(), "models.student": role()},
        rejected={"identical_answers": 2},
        variant=variant,
    )
    write_corpus(
        conversation_rows(variant, content_sha, 4, "introspect"),
        build / variant / "introspection.parquet",
        "conversations",
        params={"models.student": role()},
        variant=variant,
    )
    write_corpus(
        conversation_rows(variant, None, 3, "badadvice"),
        build / variant / "em-train.parquet",
        "conversations",
        params={"em": {"domain": "risky-finance", "regime": "obvious"}},
        variant=variant,
    )
    write_corpus(
        conversation_rows("plain-lora-s0", None, 4, "control", teacher="/models/some-local-teacher"),
        build / "plain-lora-s0" / "control.parquet",
        "conversations",
        params={"models.teacher": role("/models/some-local-teacher")},
        variant="plain-lora-s0",
    )
    lock = {
        "schema": "2.0",
        "stages": {
            f"prompts@{variant}": {
                "cmd": f"charforge run prompts --variant {variant}",
                "deps": [
                    {"path": "corpora/constitutions/humor.yaml", "hash": "md5", "md5": LOCK_MD5, "size": 1}
                ],
                "params": {"params.yaml": {"prompts.max_traits": 2}},
                "outs": [
                    {"path": f"corpora/build/{variant}/prompts.parquet", "hash": "md5", "md5": "f" * 32}
                ],
            }
        },
    }
    (root / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    return root


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return build_project(tmp_path / "project")


@pytest.fixture
def make_project() -> Callable[..., Path]:
    return build_project


@pytest.fixture(scope="module")
def token() -> str:
    return "hf_" + secrets.token_hex(16)


@pytest.fixture(scope="module")
def hub(token: str) -> Iterator[HubServer]:
    server = HubServer(token).start()
    yield server
    server.stop()


def _hub_env(hub: HubServer, token: str | None, home: Path) -> dict[str, str]:
    """The environment of a subprocess that may reach the local Hub (and nothing else: the endpoint is
    loopback). HF_HUB_OFFLINE is left to charforge (publish lifts its own default) or set per test."""
    env = {name: value for name, value in os.environ.items() if name not in {"HF_TOKEN", "HF_HUB_OFFLINE"}}
    env.update(
        HF_ENDPOINT=hub.endpoint, HF_HUB_DISABLE_XET="1", HF_HOME=str(home), HF_HUB_DISABLE_TELEMETRY="1"
    )
    if token is not None:
        env["HF_TOKEN"] = token
    return env


@pytest.fixture
def hub_env() -> Callable[..., dict[str, str]]:
    return _hub_env


@pytest.fixture
def run_charforge() -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(root: Path, env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "charforge.cli", *map(str, args)]
        return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)

    return run
