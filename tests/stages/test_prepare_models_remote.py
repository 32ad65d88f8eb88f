"""`prepare-models` with a remote ``openai`` role: naming the server in params is the asking, so the role
is available once the variable named by ``api_key_env`` holds a key. Nothing contacts the server (not even
a DNS lookup), the record holds the base_url and never the key, and a missing key is one line naming the
variable and the role (exit 1, no traceback). Loopback servers need no key, as before."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from support.factories import run_cli

from charforge.generators.llm import availability
from charforge.schemas.params import ModelRole
from charforge.stages import prepare_models

KEY_ENV = "CHARFORGE_TEST_REMOTE_KEY"
KEY = "sk-test-0123456789-never-written"
REMOTE = "https://api.example.com/v1"
LOCAL = "http://127.0.0.1:8000/v1"


def remote_judge(**overrides: str) -> ModelRole:
    fields = {"backend": "openai", "model": "judge-model", "base_url": REMOTE, "api_key_env": KEY_ENV}
    return ModelRole(**{**fields, **overrides})


def write_params(root: Path, judge_url: str = REMOTE) -> Path:
    local = {"backend": "openai", "base_url": LOCAL, "api_key_env": KEY_ENV}
    models = {
        "student": {**local, "model": "student-model"},
        "teacher": {**local, "model": "teacher-model"},
        "judge": {"backend": "openai", "model": "judge-model", "base_url": judge_url, "api_key_env": KEY_ENV},
    }
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump({"models": models}), encoding="utf-8")
    return path


@pytest.fixture
def sockets(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Every connect and name lookup made while the test runs (the network guard still applies)."""
    seen: list[object] = []
    connect, connect_ex, getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def watched_connect(self: socket.socket, address: object) -> None:
        seen.append(address)
        return connect(self, address)

    def watched_connect_ex(self: socket.socket, address: object) -> int:
        seen.append(address)
        return connect_ex(self, address)

    def watched_getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
        seen.append(host)
        return getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", watched_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", watched_connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", watched_getaddrinfo)
    yield seen


def test_a_remote_role_is_available_once_its_key_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    available, detail = availability(remote_judge())
    assert not available
    assert f"${KEY_ENV}" in detail and REMOTE in detail
    monkeypatch.setenv(KEY_ENV, "")  # an empty variable is no key
    assert not availability(remote_judge())[0]

    monkeypatch.setenv(KEY_ENV, KEY)
    available, detail = availability(remote_judge())
    assert available and REMOTE in detail and KEY_ENV in detail
    assert KEY not in detail


def test_loopback_servers_need_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    for url in (LOCAL, "http://localhost:8000/v1", "http://[::1]:8000/v1"):
        available, detail = availability(remote_judge(base_url=url))
        assert available and detail == f"local server at {url} (not contacted)"


def test_a_password_in_base_url_is_refused_and_not_repeated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    available, detail = availability(remote_judge(base_url="https://user:hunter2@api.example.com/v1"))
    assert not available and f"${KEY_ENV}" in detail and "hunter2" not in detail


def test_prepare_models_records_a_remote_role_without_contacting_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sockets: list[object]
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    paths = prepare_models.run(write_params(tmp_path), tmp_path)
    assert sockets == []  # no connection, no name lookup: the server is only named, never reached
    record = json.loads((tmp_path / "models/roles/judge.json").read_text(encoding="utf-8"))
    assert record == {"role": "judge", "backend": "openai", "model": "judge-model", "resolved": REMOTE}
    assert len(paths) == 3
    for path in paths:
        assert KEY not in path.read_text(encoding="utf-8"), f"the key was written to {path}"

    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(prepare_models.ModelNotAvailable, match=rf"models\.judge .*\${KEY_ENV}"):
        prepare_models.run(write_params(tmp_path), tmp_path)
    assert sockets == []


def test_cli_without_the_key_exits_1_naming_the_variable_and_the_role(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = write_params(tmp_path)
    monkeypatch.delenv(KEY_ENV, raising=False)
    missing = run_cli("run", "prepare-models", "--params", params, cwd=tmp_path)
    assert missing.returncode == 1, missing.stderr
    assert "Traceback" not in missing.stderr + missing.stdout
    (line,) = [text for text in missing.stderr.splitlines() if text.strip()]
    assert line.startswith("error: models.judge (openai: judge-model): ") and f"${KEY_ENV}" in line
    assert not (tmp_path / "models").exists()  # every role is checked before any record is written

    monkeypatch.setenv(KEY_ENV, KEY)
    ready = run_cli("run", "prepare-models", "--params", params, cwd=tmp_path)
    assert ready.returncode == 0, ready.stderr
    judge = json.loads((tmp_path / "models/roles/judge.json").read_text(encoding="utf-8"))
    assert judge["resolved"] == REMOTE
    assert KEY not in ready.stderr + ready.stdout

    monkeypatch.delenv(KEY_ENV)  # loopback only: no key needed, as before
    local = run_cli("run", "prepare-models", "--params", write_params(tmp_path, LOCAL), cwd=tmp_path)
    assert local.returncode == 0, local.stderr


def test_the_stages_open_a_remote_client_the_same_way(
    monkeypatch: pytest.MonkeyPatch, sockets: list[object]
) -> None:
    """Generation and the API judge both build their client with build_llm: the same key, no further
    consent, and nothing is contacted until the first request."""
    from charforge.generators.llm import BackendUnavailable, build_llm

    monkeypatch.setenv(KEY_ENV, KEY)
    llm = build_llm(remote_judge())
    llm.load()
    try:
        assert llm.api_key.get_secret_value() == KEY and str(llm.base_url) == REMOTE
        assert KEY not in repr(llm)
    finally:
        llm.unload()
    assert sockets == []
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(BackendUnavailable, match=rf"\${KEY_ENV}, which is not set"):
        build_llm(remote_judge())
