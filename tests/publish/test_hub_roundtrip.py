"""`charforge publish` over real HTTP against the local Hub-protocol server (tests/support/hub_server.py).

Publish and `load_dataset` run in subprocesses: huggingface_hub and datasets read HF_ENDPOINT and
HF_HUB_DISABLE_XET at import, and this process keeps the offline environment and the loopback guard.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from charforge.schemas import Manifest

VARIANTS = ("humor-d3-s0", "plain-lora-s0")
CONFIGS = ("humor-d3-s0-prompts", "humor-d3-s0-pairs", "humor-d3-s0-introspection", "plain-lora-s0-control")
LOAD = r"""
import json, sys
import datasets
from charforge.corpus import content_sha256
datasets.disable_progress_bars()
repo, revision, configs = sys.argv[1], sys.argv[2], sys.argv[3:]
loaded = {}
for config in configs:
    rows = datasets.load_dataset(repo, config, split="train", revision=revision).to_list()
    loaded[config] = [len(rows), content_sha256(rows)]
print(json.dumps(loaded))
"""


def manifest_hashes(project: Path, configs: tuple[str, ...] = CONFIGS) -> dict[str, list]:
    hashes = {}
    for config in configs:
        variant, _, kind = config.rpartition("-")  # no em-train here: every kind is one word
        path = project / "corpora/build" / variant / f"{kind}.manifest.json"
        manifest = Manifest.model_validate_json(path.read_text())
        hashes[config] = [manifest.rows, manifest.content_sha256]
    return hashes


class Session:
    """Runs publish and load subprocesses against the hub and keeps every log, for the token grep."""

    def __init__(self, hub, token, tmp_path: Path, hub_env, run_charforge) -> None:
        self.hub, self.token, self.tmp, self.hub_env, self.run_charforge = (
            hub,
            token,
            tmp_path,
            hub_env,
            run_charforge,
        )
        self.logs: list[str] = []
        (tmp_path / "tmp").mkdir(exist_ok=True)

    def env(self, token: str | None = "default", **extra: str) -> dict[str, str]:
        env = self.hub_env(self.hub, self.token if token == "default" else token, self.tmp / "hf-home")
        env["TMPDIR"] = str(self.tmp / "tmp")  # publish's build folder lands where the grep looks
        return {**env, **extra}

    def publish(
        self, project: Path, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        result = self.run_charforge(project, env or self.env(), "publish", *args)
        self.logs += [result.stdout, result.stderr]
        assert "Traceback" not in result.stderr, result.stderr
        return result

    def load(self, repo: str, revision: str = "main", configs: tuple[str, ...] = CONFIGS) -> dict[str, list]:
        env = self.env(HF_HUB_OFFLINE="0", HF_DATASETS_OFFLINE="0")
        command = [sys.executable, "-c", LOAD, repo, revision, *configs]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=self.tmp)
        self.logs += [result.stdout, result.stderr]
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(result.stdout.strip().splitlines()[-1])

    def assert_no_token_anywhere(self, repos: tuple[str, ...]) -> None:
        for log in self.logs:
            assert self.token not in log
        needle = self.token.encode()
        for path in self.tmp.rglob("*"):
            if path.is_file():
                assert needle not in path.read_bytes(), path
        for repo in repos:
            stored = self.hub.repos[f"dataset:{repo}"]
            for files in stored.commits.values():
                assert all(needle not in item.data for item in files.values())
            assert all(self.token not in message for message in stored.messages.values())
        assert not any((self.tmp / "tmp").iterdir())  # the build folder was removed


def test_publish_loads_back_and_the_same_content_adds_no_commit(
    project, tmp_path, hub, token, hub_env, run_charforge
) -> None:
    session = Session(hub, token, tmp_path, hub_env, run_charforge)
    repo = "charforge-test/roundtrip"
    env = session.env()
    # HF_HUB_OFFLINE is not set: charforge sets its own offline default, and publish lifts it
    assert "HF_HUB_OFFLINE" not in env and env["TRANSFORMERS_OFFLINE"] == "1"
    first = session.publish(project, *VARIANTS, "--repo-id", repo)
    assert first.returncode == 0, first.stderr
    head = hub.head(repo)
    assert f"commit {head}" in first.stderr and hub.commit_count(repo) == 2  # creation + one publish
    files = hub.files(repo)
    assert sorted(files) == sorted(
        [".gitattributes", "README.md", *(f"data/{c}/train-00000-of-00001.parquet" for c in CONFIGS)]
    )
    assert session.load(repo) == manifest_hashes(project)  # every config, every row

    header = files["README.md"].decode().split("---\n")[1]
    metadata = yaml.safe_load(header)
    assert [config["config_name"] for config in metadata["configs"]] == list(CONFIGS)
    assert ("POST", "/api/validate-yaml") in hub.requests

    before = len(hub.requests)
    second = session.publish(project, *VARIANTS, "--repo-id", repo)
    assert second.returncode == 0, second.stderr
    assert "no new commit" in second.stderr and hub.head(repo) == head and hub.commit_count(repo) == 2
    assert not [
        request for request in hub.requests[before:] if request[0] == "PUT" or "/commit/" in request[1]
    ]

    # the repo holds exactly what the last publish named: the other variant's files go
    third = session.publish(project, "humor-d3-s0", "--repo-id", repo)
    assert third.returncode == 0, third.stderr
    assert sorted(hub.files(repo)) == sorted(
        [".gitattributes", "README.md", *(f"data/{c}/train-00000-of-00001.parquet" for c in CONFIGS[:3])]
    )
    session.assert_no_token_anywhere((repo,))


def test_a_failure_mid_upload_leaves_the_previous_commit(
    project, tmp_path, hub, token, hub_env, run_charforge, make_project
) -> None:
    session = Session(hub, token, tmp_path, hub_env, run_charforge)
    repo = "charforge-test/atomic"
    assert session.publish(project, *VARIANTS, "--repo-id", repo).returncode == 0
    head, files = hub.head(repo), hub.files(repo)
    old = manifest_hashes(project)
    make_project(project, salt=" (v2)")  # new prompts and pairs: two LFS uploads
    new = manifest_hashes(project)
    assert new["humor-d3-s0-pairs"] != old["humor-d3-s0-pairs"]

    for failure, after in (("lfs-put", 1), ("commit", 0)):  # the second upload fails; then the commit
        hub.fail(failure, after=after)
        result = session.publish(project, *VARIANTS, "--repo-id", repo)
        assert result.returncode == 1, result.stderr
        assert f"still at its previous commit {head}" in result.stderr and "injected failure" in result.stderr
        assert hub.head(repo) == head and hub.files(repo) == files
        assert session.load(repo, configs=("humor-d3-s0-pairs",)) == {
            "humor-d3-s0-pairs": old["humor-d3-s0-pairs"]
        }
    assert not hub.pending_failures  # both failures were actually hit

    result = session.publish(project, *VARIANTS, "--repo-id", repo)
    assert result.returncode == 0, result.stderr
    assert hub.head(repo) != head and hub.commit_count(repo) == 3
    assert session.load(repo) == new
    session.assert_no_token_anywhere((repo,))


def test_a_failed_first_publish_leaves_no_repo_and_a_failed_new_branch_no_branch(
    project, tmp_path, hub, token, hub_env, run_charforge
) -> None:
    session = Session(hub, token, tmp_path, hub_env, run_charforge)
    repo = "charforge-test/first"
    for failure in ("lfs-put", "commit"):
        hub.fail(failure)
        result = session.publish(project, *VARIANTS, "--repo-id", repo)
        assert result.returncode == 1, result.stderr
        assert "the repository this publish created was deleted again" in result.stderr
        assert f"dataset:{repo}" not in hub.repos
    assert not hub.pending_failures

    assert session.publish(project, "plain-lora-s0", "--repo-id", repo).returncode == 0
    head = hub.head(repo)
    hub.fail("commit")
    result = session.publish(project, *VARIANTS, "--repo-id", repo, "--revision", "dev")
    assert result.returncode == 1, result.stderr
    assert "the branch 'dev' this publish created was deleted again" in result.stderr
    assert sorted(hub.repos[f"dataset:{repo}"].branches) == ["main"] and hub.head(repo) == head
    assert session.publish(project, *VARIANTS, "--repo-id", repo, "--revision", "dev").returncode == 0
    assert hub.head(repo) == head and hub.head(repo, "dev") not in {None, head}
    session.assert_no_token_anywhere((repo,))


def start_publish(session: Session, project: Path, repo: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "charforge.cli", "publish", *VARIANTS, "--repo-id", repo]
    return subprocess.Popen(
        command, cwd=project, env=session.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_ctrl_c_mid_upload_of_a_first_publish_leaves_no_repo(project, tmp_path, hub, token, hub_env) -> None:
    session = Session(hub, token, tmp_path, hub_env, None)
    repo = "charforge-test/interrupted"
    hub.stall("lfs-put")
    publishing = start_publish(session, project, repo)
    try:
        assert hub.stalled.wait(120), "the upload never reached the hub"
        assert f"dataset:{repo}" in hub.repos
        publishing.send_signal(signal.SIGINT)
        time.sleep(1)  # the interrupt lands while the upload hangs
    finally:
        hub.resume()
    stdout, stderr = publishing.communicate(timeout=120)
    session.logs += [stdout, stderr]
    assert publishing.returncode == 1, stderr
    assert "Traceback" not in stderr
    assert "publish interrupted before its commit (the repository this publish created was deleted" in stderr
    assert f"dataset:{repo}" not in hub.repos
    session.assert_no_token_anywhere(())


def test_a_failed_first_publish_keeps_the_repo_when_somebody_else_wrote_to_it(
    project, tmp_path, hub, token, hub_env
) -> None:
    session = Session(hub, token, tmp_path, hub_env, None)
    repo = "charforge-test/shared"
    hub.stall("lfs-put")
    hub.fail("commit")
    publishing = start_publish(session, project, repo)
    try:
        assert hub.stalled.wait(120), "the upload never reached the hub"
        theirs = hub.repos[f"dataset:{repo}"].commit("other", {}, "somebody else's commit")
    finally:
        hub.resume()
    stdout, stderr = publishing.communicate(timeout=120)
    session.logs += [stdout, stderr]
    assert publishing.returncode == 1 and "injected failure" in stderr, stderr
    assert "the repository this publish created now also holds refs/heads/other: check it" in stderr
    assert hub.head(repo, "other") == theirs
    session.assert_no_token_anywhere((repo,))


def test_private_repo_on_a_new_branch(project, tmp_path, hub, token, hub_env, run_charforge) -> None:
    session = Session(hub, token, tmp_path, hub_env, run_charforge)
    repo = "charforge-test/private"
    result = session.publish(project, "plain-lora-s0", "--repo-id", repo, "--private", "--revision", "dev")
    assert result.returncode == 0, result.stderr
    assert hub.repos[f"dataset:{repo}"].private
    assert sorted(hub.files(repo, "main")) == [".gitattributes"]  # main untouched
    assert "README.md" in hub.files(repo, "dev")
    configs = ("plain-lora-s0-control",)
    assert session.load(repo, "dev", configs) == manifest_hashes(project, configs)

    public = "charforge-test/public"
    assert session.publish(project, "plain-lora-s0", "--repo-id", public).returncode == 0
    refused = session.publish(project, "plain-lora-s0", "--repo-id", public, "--private")
    assert refused.returncode == 1 and "exists and is public" in refused.stderr
    session.assert_no_token_anywhere((repo, public))


def test_no_token_a_wrong_token_or_a_user_offline_setting_stop_cleanly(
    project, tmp_path, hub, token, hub_env, run_charforge
) -> None:
    session = Session(hub, token, tmp_path, hub_env, run_charforge)
    repo = "charforge-test/refused"
    before = len(hub.requests)
    result = session.publish(project, "plain-lora-s0", "--repo-id", repo, env=session.env(token=None))
    assert result.returncode == 1 and "no Hugging Face token: set HF_TOKEN" in result.stderr
    result = session.publish(project, "plain-lora-s0", "--repo-id", repo, env=session.env(HF_HUB_OFFLINE="1"))
    assert result.returncode == 1 and "HF_HUB_OFFLINE=1 is set in your environment" in result.stderr
    assert len(hub.requests) == before  # neither reached the Hub

    wrong = "hf_" + "x" * 32
    result = session.publish(project, "plain-lora-s0", "--repo-id", repo, env=session.env(token=wrong))
    assert result.returncode == 1 and "publish failed" in result.stderr and "401" in result.stderr
    assert wrong not in result.stderr + result.stdout
    assert f"dataset:{repo}" not in hub.repos

    # a token that found its way into a manifest would reach the card: refused before any upload
    manifest_file = project / "corpora/build/plain-lora-s0/control.manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest_file.write_text(json.dumps({**manifest, "metrics": {"note": f"token {token}"}}))
    result = session.publish(project, "plain-lora-s0", "--repo-id", repo)
    manifest_file.write_text(json.dumps(manifest))  # out of the tree again before the grep
    assert result.returncode == 1 and "README.md contains your Hugging Face token" in result.stderr
    assert f"dataset:{repo}" not in hub.repos
    session.assert_no_token_anywhere(())
