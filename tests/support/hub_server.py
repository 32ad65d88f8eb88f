"""A small Hugging Face Hub-protocol server for tests: real HTTP on 127.0.0.1, state in memory.

It speaks the endpoints `huggingface_hub` uploads and `datasets.load_dataset` reads through (docs/design.md
§7): repo create/info/delete, preupload, the LFS batch API and PUT of the bytes, validate-yaml, the NDJSON
commit (atomic: a commit either applies whole or not at all, and honours ``parentCommit``), branch
create/delete, refs, tree listing, paths-info, and HEAD/GET of resolved files with byte ranges. Writes need
the bearer token given at start. ``fail`` injects a failure into the next LFS PUT or commit call, so tests can
check that a failed publish leaves the repo at its previous commit; ``stall`` holds the next LFS PUT until
``resume``, so a test can interrupt a client mid-upload."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n"
GITATTRIBUTES = b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"
LFS_SUFFIXES = (".parquet", ".arrow", ".bin", ".safetensors")
FAILURE_STATUS = {"lfs-put": 400, "commit": 500}


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class StoredFile:
    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def pointer(self) -> bytes:
        return LFS_POINTER.format(oid=self.sha256, size=len(self.data)).encode()

    @property
    def blob_id(self) -> str:
        return git_blob_sha1(self.pointer if self.lfs else self.data)


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, dict[str, StoredFile]] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)
    lfs: dict[str, bytes] = field(default_factory=dict)

    def commit(self, branch: str, files: dict[str, StoredFile], message: str) -> str:
        parent = self.branches.get(branch, "")
        listing = json.dumps(sorted((path, stored.blob_id) for path, stored in files.items()))
        sha = hashlib.sha1(f"{parent}\n{message}\n{listing}\n{len(self.commits)}".encode()).hexdigest()
        self.commits[sha] = dict(files)
        self.messages[sha] = message
        self.branches[branch] = sha
        return sha

    def resolve(self, revision: str) -> str | None:
        return self.branches.get(revision) or (revision if revision in self.commits else None)


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class HubServer:
    """Start with ``HubServer(token).start()``; ``endpoint`` is its base URL; ``stop()`` ends it."""

    def __init__(self, token: str, namespace: str = "charforge-test") -> None:
        self.token = token
        self.namespace = namespace
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.pending_failures: dict[str, int] = {}
        self.stalling: str | None = None  # the call ``stall`` holds
        self.stalled = threading.Event()  # set once that call has arrived
        self._resumed = threading.Event()
        self.tickets: dict[str, tuple[Repo, str]] = {}
        self.lock = threading.RLock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def fail(self, what: str, after: int = 0) -> None:
        """Fail the next ``what`` call ("lfs-put" or "commit") once ``after`` of them succeeded."""
        with self.lock:
            self.pending_failures[what] = after

    def stall(self, what: str) -> None:
        """Hold the next ``what`` call ("lfs-put") until ``resume()``: a client caught mid-upload."""
        with self.lock:
            self.stalling = what
            self.stalled.clear()
            self._resumed.clear()

    def resume(self) -> None:
        self._resumed.set()

    def hold_if_stalling(self, what: str, timeout_s: float = 120) -> None:
        with self.lock:
            if self.stalling != what:
                return
            self.stalling = None
        self.stalled.set()
        self._resumed.wait(timeout_s)

    def head(self, repo_id: str, branch: str = "main") -> str | None:
        repo = self.repos.get(f"dataset:{repo_id}")
        return repo.branches.get(branch) if repo else None

    def commit_count(self, repo_id: str) -> int:
        repo = self.repos.get(f"dataset:{repo_id}")
        return len(repo.commits) if repo else 0

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[f"dataset:{repo_id}"]
        sha = repo.resolve(revision)
        return {path: stored.data for path, stored in repo.commits[sha or ""].items()}

    def should_fail(self, what: str) -> bool:
        with self.lock:
            if what not in self.pending_failures:
                return False
            if self.pending_failures[what] > 0:
                self.pending_failures[what] -= 1
                return False
            del self.pending_failures[what]
            return True


def _handler_for(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(_HubHandler):
        server_state = hub

    return Handler


API_REPO = re.compile(r"^/api/(?P<type>model|dataset|space)s/(?P<repo>[^/]+/[^/]+)(?P<rest>/.*)?$")
GIT_REPO = re.compile(r"^/(?:(?P<type>dataset|space)s/)?(?P<repo>[^/]+/[^/]+?)(?:\.git)?(?P<rest>/.*)$")


class _HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_state: HubServer

    def log_message(self, format: str, *args: Any) -> None:
        return

    # --- plumbing -------------------------------------------------------------------------------

    def _body(self) -> bytes:
        """The request body, read once (an error answered before reading it must still consume it, or
        the next request on the kept-alive connection would start inside it)."""
        if self._read_body is None:
            length = int(self.headers.get("Content-Length") or 0)
            self._read_body = self.rfile.read(length) if length else b""
        return self._read_body

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(
            status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})}
        )

    def _authorised(self) -> bool:
        return self.headers.get("Authorization") == f"Bearer {self.server_state.token}"

    def _dispatch(self) -> None:
        hub = self.server_state
        url = urlsplit(self.path)
        with hub.lock:
            hub.requests.append((self.command, url.path))
        self._read_body: bytes | None = None  # the handler serves every request of a connection
        try:
            self._route(url.path, parse_qs(url.query))
        except HubError as error:
            self._body()
            headers = {"X-Error-Code": error.code} if error.code else {}
            self._json({"error": error.message}, error.status, {"X-Error-Message": error.message, **headers})

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    def _repo(self, repo_type: str, repo_id: str, write: bool = False) -> Repo:
        repo = self.server_state.repos.get(f"{repo_type}:{repo_id}")
        if repo is None or (repo.private and not self._authorised()):
            raise HubError(404, "Repository not found", "RepoNotFound")
        if write and not self._authorised():
            raise HubError(401, "Invalid credentials in Authorization header")
        return repo

    def _revision(self, repo: Repo, revision: str) -> str:
        sha = repo.resolve(unquote(revision))
        if sha is None:
            raise HubError(404, f"Invalid rev id: {unquote(revision)}", "RevisionNotFound")
        return sha

    # --- routing --------------------------------------------------------------------------------

    def _route(self, path: str, query: dict[str, list[str]]) -> None:
        if path == "/api/repos/create" and self.command == "POST":
            return self._create_repo()
        if path == "/api/repos/delete" and self.command == "DELETE":
            return self._delete_repo()
        if path == "/api/validate-yaml" and self.command == "POST":
            return self._validate_yaml()
        if path.startswith("/lfs-upload/") and self.command == "PUT":
            return self._lfs_put(path.removeprefix("/lfs-upload/"))
        match = API_REPO.match(path)
        if match:
            return self._api(match["type"], unquote(match["repo"]), match["rest"] or "", query)
        match = GIT_REPO.match(path)
        if match:
            repo_type = match["type"] or "model"
            rest = match["rest"]
            if rest == "/info/lfs/objects/batch" and self.command == "POST":
                return self._lfs_batch(repo_type, match["repo"])
            if rest.startswith("/resolve/") and self.command in {"GET", "HEAD"}:
                revision, _, file_path = rest.removeprefix("/resolve/").partition("/")
                return self._resolve(repo_type, match["repo"], revision, unquote(file_path))
        raise HubError(404, f"no route for {self.command} {path}")

    def _api(self, repo_type: str, repo_id: str, rest: str, query: dict[str, list[str]]) -> None:
        command = self.command
        if command == "GET" and (rest == "" or rest.startswith("/revision/")):
            return self._info(repo_type, repo_id, rest.removeprefix("/revision/") or "main")
        action, _, tail = rest.lstrip("/").partition("/")
        if command == "POST" and action == "preupload":
            return self._preupload(self._repo(repo_type, repo_id, write=True), tail)
        if command == "POST" and action == "commit":
            return self._commit(self._repo(repo_type, repo_id, write=True), tail)
        if command == "POST" and action == "branch":
            return self._branch(self._repo(repo_type, repo_id, write=True), unquote(tail))
        if command == "DELETE" and action == "branch":
            return self._delete_branch(self._repo(repo_type, repo_id, write=True), unquote(tail))
        if command == "POST" and action == "paths-info":
            return self._paths_info(self._repo(repo_type, repo_id), tail)
        if command == "GET" and action == "refs":
            return self._refs(self._repo(repo_type, repo_id))
        if command == "GET" and action == "tree":
            revision, _, file_path = tail.partition("/")
            recursive = query.get("recursive", ["false"])[0].lower() == "true"
            return self._tree(self._repo(repo_type, repo_id), revision, unquote(file_path), recursive)
        raise HubError(404, f"no route for {command} /api/{repo_type}s/{repo_id}{rest}")

    # --- endpoints ------------------------------------------------------------------------------

    def _repo_request(self) -> tuple[dict[str, Any], str, str]:
        """An authorised repos/create or repos/delete call: its payload, repo type and repo id."""
        if not self._authorised():
            raise HubError(401, "Invalid credentials in Authorization header")
        payload = json.loads(self._body())
        namespace = payload.get("organization") or self.server_state.namespace
        return payload, payload.get("type") or "model", f"{namespace}/{payload['name']}"

    def _create_repo(self) -> None:
        payload, repo_type, repo_id = self._repo_request()
        hub = self.server_state
        namespace = repo_id.split("/")[0]
        if namespace != hub.namespace:
            raise HubError(403, f"You don't have the rights to create a repo under {namespace!r}")
        key = f"{repo_type}:{repo_id}"
        url = f"{hub.endpoint}/{repo_type}s/{repo_id}"
        with hub.lock:
            if key in hub.repos:  # the Hub's answer carries the url, which the client reads
                return self._json({"error": "You already created this dataset repo", "url": url}, 409)
            private = payload.get("visibility") == "private" or bool(payload.get("private"))
            repo = Repo(repo_id, repo_type, private)
            repo.commit("main", {".gitattributes": StoredFile(GITATTRIBUTES, False)}, "initial commit")
            hub.repos[key] = repo
        self._json({"url": url, "name": repo_id})

    def _delete_repo(self) -> None:
        _, repo_type, repo_id = self._repo_request()
        hub = self.server_state
        key = f"{repo_type}:{repo_id}"
        with hub.lock:
            if key not in hub.repos:
                raise HubError(404, "Repository not found", "RepoNotFound")
            del hub.repos[key]
        self._send(200)

    def _info(self, repo_type: str, repo_id: str, revision: str) -> None:
        repo = self._repo(repo_type, repo_id)
        sha = self._revision(repo, revision)
        files = repo.commits[sha]
        self._json(
            {
                "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
                "id": repo_id,
                "author": repo_id.split("/")[0],
                "sha": sha,
                "private": repo.private,
                "gated": False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "lastModified": "2025-01-01T00:00:00.000Z",
                "createdAt": "2025-01-01T00:00:00.000Z",
                "siblings": [{"rfilename": path} for path in sorted(files)],
            }
        )

    def _validate_yaml(self) -> None:
        content = json.loads(self._body()).get("content", "")
        match = re.match(r"^---\n(.*?)\n---\n", content, re.DOTALL)
        try:
            metadata = yaml.safe_load(match[1]) if match else {}
        except yaml.YAMLError as error:
            raise HubError(400, f"Invalid YAML in README.md: {error}") from None
        if not isinstance(metadata, dict):
            raise HubError(400, "README.md metadata must be a YAML mapping")
        configs = metadata.get("configs", [])
        if not isinstance(configs, list) or not all(isinstance(item, dict) for item in configs):
            raise HubError(400, '"configs" must be a list of mappings')
        for config in configs:
            if not isinstance(config.get("config_name"), str) or "data_files" not in config:
                raise HubError(400, f'"configs" entry {config!r} needs config_name and data_files')
        self._json({"errors": [], "warnings": []})

    def _preupload(self, repo: Repo, revision: str) -> None:
        files = repo.commits[self._revision(repo, revision)]
        answer = []
        for item in json.loads(self._body())["files"]:
            path = item["path"]
            lfs = path.endswith(LFS_SUFFIXES) or b"\x00" in base64.b64decode(item["sample"])
            current = files.get(path)
            oid = (
                None if current is None else (current.sha256 if current.lfs else git_blob_sha1(current.data))
            )
            answer.append(
                {"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid}
            )
        self._json({"files": answer})

    def _lfs_batch(self, repo_type: str, repo_id: str) -> None:
        repo = self._repo(repo_type, repo_id, write=True)
        objects = []
        for item in json.loads(self._body())["objects"]:
            entry: dict[str, Any] = {"oid": item["oid"], "size": item["size"], "authenticated": True}
            if item["oid"] not in repo.lfs:  # like a presigned storage URL: the ticket is the permission
                ticket = secrets.token_hex(16)
                with self.server_state.lock:
                    self.server_state.tickets[ticket] = (repo, item["oid"])
                href = f"{self.server_state.endpoint}/lfs-upload/{ticket}"
                entry["actions"] = {"upload": {"href": href}}
            objects.append(entry)
        self._json({"transfer": "basic", "objects": objects})

    def _lfs_put(self, ticket: str) -> None:
        data = self._body()
        if ticket not in self.server_state.tickets:
            raise HubError(403, "unknown or expired upload URL")
        repo, oid = self.server_state.tickets[ticket]
        self.server_state.hold_if_stalling("lfs-put")
        if self.server_state.should_fail("lfs-put"):
            raise HubError(FAILURE_STATUS["lfs-put"], "injected failure: LFS upload refused")
        if hashlib.sha256(data).hexdigest() != oid:
            raise HubError(400, "uploaded bytes do not match the announced sha256")
        with self.server_state.lock:
            repo.lfs[oid] = data
        self._send(200)

    def _commit(self, repo: Repo, revision: str) -> None:
        branch = unquote(revision)
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        if self.server_state.should_fail("commit"):
            raise HubError(FAILURE_STATUS["commit"], "injected failure: commit refused")
        with self.server_state.lock:
            if branch not in repo.branches:
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            head = repo.branches[branch]
            files = dict(repo.commits[head])
            header: dict[str, Any] = {}
            for line in lines:
                key, value = line["key"], line["value"]
                if key == "header":
                    header = value
                elif key == "file":
                    files[value["path"]] = StoredFile(base64.b64decode(value["content"]), False)
                elif key == "lfsFile":
                    if value["oid"] not in repo.lfs:
                        raise HubError(
                            422, f"LFS object {value['oid']} of {value['path']} was never uploaded"
                        )
                    files[value["path"]] = StoredFile(repo.lfs[value["oid"]], True)
                elif key == "deletedFile":
                    if files.pop(value["path"], None) is None:
                        raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {path: item for path, item in files.items() if not path.startswith(prefix)}
            if header.get("parentCommit") not in (None, head):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            sha = repo.commit(branch, files, header.get("summary", ""))
        url = f"{self.server_state.endpoint}/{repo.repo_type}s/{repo.repo_id}/commit/{sha}"
        self._json({"commitUrl": url, "commitOid": sha})

    def _branch(self, repo: Repo, branch: str) -> None:
        payload = json.loads(self._body() or b"{}")
        with self.server_state.lock:
            if branch in repo.branches:
                raise HubError(409, f"Reference refs/heads/{branch} already exists")
            repo.branches[branch] = self._revision(repo, payload.get("startingPoint") or "main")
        self._send(200)

    def _refs(self, repo: Repo) -> None:
        with self.server_state.lock:
            branches = [
                {"name": name, "ref": f"refs/heads/{name}", "targetCommit": sha}
                for name, sha in sorted(repo.branches.items())
            ]
        self._json({"branches": branches, "converts": [], "tags": [], "pullRequests": []})

    def _delete_branch(self, repo: Repo, branch: str) -> None:
        with self.server_state.lock:
            if branch == "main":
                raise HubError(403, "Cannot delete the main branch")
            if branch not in repo.branches:
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            del repo.branches[branch]
        self._send(200)

    def _entries(self, files: dict[str, StoredFile]) -> dict[str, dict[str, Any]]:
        entries: dict[str, dict[str, Any]] = {}
        for path, stored in files.items():
            entry: dict[str, Any] = {
                "type": "file",
                "oid": stored.blob_id,
                "size": len(stored.data),
                "path": path,
            }
            if stored.lfs:
                entry["lfs"] = {
                    "oid": stored.sha256,
                    "size": len(stored.data),
                    "pointerSize": len(stored.pointer),
                }
            entries[path] = entry
            parts = path.split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                folder = "/".join(parts[:depth])
                tree_id = hashlib.sha1(folder.encode()).hexdigest()
                entries.setdefault(folder, {"type": "directory", "oid": tree_id, "size": 0, "path": folder})
        return entries

    def _tree(self, repo: Repo, revision: str, folder: str, recursive: bool) -> None:
        entries = self._entries(repo.commits[self._revision(repo, revision)])
        folder = folder.strip("/")
        if folder and entries.get(folder, {}).get("type") != "directory":
            raise HubError(404, f"{folder} does not exist", "EntryNotFound")
        prefix = f"{folder}/" if folder else ""
        listed = [
            entry
            for path, entry in sorted(entries.items())
            if path.startswith(prefix) and (recursive or "/" not in path.removeprefix(prefix))
        ]
        self._json(listed)

    def _paths_info(self, repo: Repo, revision: str) -> None:
        entries = self._entries(repo.commits[self._revision(repo, revision)])
        body = self._body().decode()
        form = json.loads(body) if body.startswith("{") else parse_qs(body)
        paths = form.get("paths", [])
        self._json([entries[path.strip("/")] for path in paths if path.strip("/") in entries])

    def _resolve(self, repo_type: str, repo_id: str, revision: str, file_path: str) -> None:
        repo = self._repo(repo_type, repo_id)
        sha = self._revision(repo, revision)
        stored = repo.commits[sha].get(file_path)
        if stored is None:
            raise HubError(404, f"Entry not found: {file_path}", "EntryNotFound")
        etag = stored.sha256 if stored.lfs else stored.blob_id
        headers = {"X-Repo-Commit": sha, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
        if stored.lfs:
            headers.update({"X-Linked-Size": str(len(stored.data)), "X-Linked-Etag": f'"{etag}"'})
        data = stored.data
        ranged = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if ranged and (ranged[1] or ranged[2]):
            if ranged[1]:
                start = int(ranged[1])
                end = min(int(ranged[2]), len(data) - 1) if ranged[2] else len(data) - 1
            else:  # a suffix range: the last N bytes
                start, end = max(0, len(data) - int(ranged[2])), len(data) - 1
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return self._send(206, data[start : end + 1], headers)
        self._send(200, data, headers)
