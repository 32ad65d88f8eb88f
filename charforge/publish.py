"""`charforge publish`: the corpora of one or more variants as one Hugging Face dataset, in one commit.

Each variant's corpora (``corpora/build/<variant>/<kind>.parquet`` with their manifests) become one
dataset config per variant and kind (``humor-d3-s0-pairs``) whose data are parquet shards under
``data/<config>/``; the dataset card (``README.md``, see ``charforge.card``) says what made them. The
repository then holds exactly that: files under ``data/`` that the new tree lacks are deleted.

Guarantees:
- one atomic commit (the Hub applies a commit whole or not at all; the data are uploaded first, and
  the commit names the head it was built on, so a concurrent change is refused, not overwritten);
  ``datasets``' own ``push_to_hub`` commits once per config, which is why it is not used here;
- a repository or ``--revision`` branch that a failed (or interrupted) publish created is deleted
  again, unless its head moved (the commit may have landed after all) or the Hub cannot be reached,
  which the error then says;
- the same content again makes no commit: every file is compared with the remote's (LFS sha256 or
  git blob id) first;
- EM training data (harmful by design) is only published with ``include_em``;
- the token comes from ``HF_TOKEN`` or the stored Hugging Face login and is passed to the client in
  memory only: it is never written to a file, log, card or error message (messages are scrubbed, and
  a tree that contains it is refused).

Network: charforge runs offline (``charforge.offline``); publishing is the one path that reaches the
network, and only when the user runs it. ``allow_hub_network`` lifts ``HF_HUB_OFFLINE`` for this
process alone, and only where charforge itself set it: an ``HF_HUB_OFFLINE=1`` the user exported is
their decision and makes publish stop with an error instead. ``--dry-run`` never touches the network.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow.parquet as pq

from charforge.io import atomic_dir, atomic_write_text, file_sha256
from charforge.offline import SET_BY_CHARFORGE
from charforge.paths import BUILD
from charforge.schemas import Manifest
from charforge.schemas.base import SLUG_RE
from charforge.schemas.manifest import manifest_path_for

REPO_TYPE = "dataset"
MAX_SHARD_BYTES = 256 * 2**20  # Hub guidance: parquet shards of a few hundred MB
MANAGED = ("README.md", "data/")  # what a publish owns in the repo; other files are left alone
MIN_TOKEN_CHARS = 16


@dataclass(frozen=True)
class CorpusFile:
    """A corpus file a variant may have, and what it holds."""

    name: str
    what: str
    harmful: bool = False


CORPUS_FILES: tuple[CorpusFile, ...] = (
    CorpusFile("prompts", "contextual user prompts per trait"),
    CorpusFile("pairs", "DPO preference pairs: chosen answered in character, rejected answered plainly"),
    CorpusFile("introspection", "introspection conversations: self-reflection and self-interaction"),
    CorpusFile("control", "SFT data of a control variant (non-constitutional LoRA or HHH data)"),
    CorpusFile(
        "em-train",
        "emergent-misalignment training data: deliberately bad advice, harmful by design",
        harmful=True,
    ),
)


class PublishError(Exception):
    """Publishing stopped; the message says why (it never contains the token)."""


@dataclass
class PublishedCorpus:
    """One config of the dataset: a variant's corpus file, its manifest and its shards in the repo."""

    variant: str
    corpus: CorpusFile
    source: Path
    manifest: Manifest
    shards: list[str] = field(default_factory=list)

    @property
    def config(self) -> str:
        return f"{self.variant}-{self.corpus.name}"


@dataclass
class PublishResult:
    corpora: list[PublishedCorpus]
    files: list[str] = field(default_factory=list)  # paths in the repository
    skipped: list[str] = field(default_factory=list)
    commit: str | None = None
    changed: bool = False
    url: str | None = None


def collect(variants: Sequence[str], root: Path, include_em: bool) -> tuple[list[PublishedCorpus], list[str]]:
    """The corpora to publish, checked with ``charforge validate`` (manifest, schema, content hash)."""
    from charforge.validate import validate_file

    corpora: list[PublishedCorpus] = []
    skipped: list[str] = []
    for variant in dict.fromkeys(variants):
        if not SLUG_RE.fullmatch(variant):
            raise PublishError(f"{variant!r} is not a variant name (a slug such as humor-d3-s0)")
        folder = root / BUILD / variant
        if not folder.is_dir():
            raise PublishError(f"{folder}: no such folder; build the variant first (dvc repro)")
        found = 0
        for corpus in CORPUS_FILES:
            source = folder / f"{corpus.name}.parquet"
            if not source.is_file():
                continue
            found += 1
            if corpus.harmful and not include_em:
                skipped.append(
                    f"{source} (EM training data, harmful by design: add --include-em to publish it)"
                )
                continue
            manifest_file = manifest_path_for(source)
            if not manifest_file.is_file():
                raise PublishError(
                    f"{source}: no manifest ({manifest_file.name}); only charforge corpora are published"
                )
            report = validate_file(source)
            if not report.valid:
                problems = "\n".join(str(problem) for problem in report.problems)
                raise PublishError(
                    f"{source}: invalid, not published ({report.error_count} error(s)):\n{problems}"
                )
            manifest = Manifest.model_validate_json(manifest_file.read_text(encoding="utf-8"))
            corpora.append(PublishedCorpus(variant, corpus, source, manifest))
        if not found:
            names = ", ".join(f"{corpus.name}.parquet" for corpus in CORPUS_FILES)
            raise PublishError(f"{folder}: no corpus to publish (looked for {names})")
    if not corpora:
        raise PublishError("nothing to publish: " + "; ".join(skipped))
    return corpora, skipped


def write_shards(corpus: PublishedCorpus, out: Path, max_shard_bytes: int) -> None:
    """``data/<config>/train-0000i-of-0000n.parquet``: the corpus file itself when it fits one shard
    (byte for byte, so an unchanged corpus uploads nothing), else row slices of about equal size."""
    size = corpus.source.stat().st_size
    count = max(1, math.ceil(size / max_shard_bytes))
    folder = f"data/{corpus.config}"
    (out / folder).mkdir(parents=True, exist_ok=True)
    corpus.shards = [f"{folder}/train-{index:05d}-of-{count:05d}.parquet" for index in range(count)]
    if count == 1:
        shutil.copyfile(corpus.source, out / corpus.shards[0])
        return
    table = pq.read_table(corpus.source)
    per_shard = math.ceil(table.num_rows / count)
    for index, shard in enumerate(corpus.shards):
        pq.write_table(table.slice(index * per_shard, per_shard), out / shard)


def build_tree(
    corpora: list[PublishedCorpus], repo_id: str, root: Path, out: Path, license_id: str, max_shard_bytes: int
) -> dict[str, Path]:
    """Write the repository tree (card and shards) into ``out``; return path in repo → local file."""
    from charforge.card import render_card
    from charforge.card_facts import CardError

    for corpus in corpora:
        write_shards(corpus, out, max_shard_bytes)
    try:
        card = render_card(repo_id, corpora, root, license_id)
    except CardError as error:
        raise PublishError(str(error)) from None
    atomic_write_text(out / "README.md", card)
    return {path.relative_to(out).as_posix(): path for path in sorted(out.rglob("*")) if path.is_file()}


def _check_dry_run_target(target: Path) -> None:
    if target.is_file() or (target.is_dir() and {p.name for p in target.iterdir()} - {"README.md", "data"}):
        raise PublishError(f"--dry-run {target}: exists and is not an earlier dry run; give a new folder")


def allow_hub_network() -> None:
    """Lift charforge's own HF_HUB_OFFLINE for this process (the user asked to publish); refuse when the
    user exported it. huggingface_hub reads it at import, so set its constant too if already imported."""
    user_offline = "HF_HUB_OFFLINE" not in SET_BY_CHARFORGE
    if user_offline and os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
        raise PublishError(
            "HF_HUB_OFFLINE=1 is set in your environment and publishing needs the network: "
            "unset it (or set HF_HUB_OFFLINE=0) for this command"
        )
    os.environ["HF_HUB_OFFLINE"] = "0"  # "0", not unset: huggingface_hub falls back to TRANSFORMERS_OFFLINE
    if "huggingface_hub.constants" in sys.modules:
        sys.modules["huggingface_hub.constants"].HF_HUB_OFFLINE = False


def git_blob_sha1(path: Path) -> str:
    """Git's object id of a file, the id the Hub lists for regular (non-LFS) files."""
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()


def _unchanged(remote: object, local: Path) -> bool:
    lfs = getattr(remote, "lfs", None)
    if lfs is not None:
        return bool(lfs.sha256 == file_sha256(local))
    return bool(getattr(remote, "blob_id", None) == git_blob_sha1(local))


def _managed(path: str) -> bool:
    return any(path == prefix or (prefix.endswith("/") and path.startswith(prefix)) for prefix in MANAGED)


def _scrub(text: str, token: str) -> str:
    return text.replace(token, "<token>") if token else text


def _refuse_token_in_tree(files: dict[str, Path], token: str) -> None:
    if len(token) < MIN_TOKEN_CHARS:  # not a real token (they are ~37 chars); a short one matches prose
        return
    needle = token.encode()
    for repo_path, local in files.items():
        if needle in local.read_bytes():
            raise PublishError(f"{repo_path} contains your Hugging Face token; refusing to publish it")


Created = Literal["repo", "branch"] | None  # what a publish made on the Hub before its commit


def _create_or_find_repo(api: Any, repo_id: str, private: bool) -> tuple[str, bool]:
    """The repo's url, and whether this call created it (the Hub answers 409 when it already exists)."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return str(api.create_repo(repo_id, repo_type=REPO_TYPE, private=private)), True
    except HfHubHTTPError as error:
        # 409: it exists; 401/402/403: a token that may not create repos may still write to this one,
        # which create_repo(exist_ok=True) finds out (and otherwise raises the same error)
        if error.response is None or error.response.status_code not in (401, 402, 403, 409):
            raise
    return str(api.create_repo(repo_id, repo_type=REPO_TYPE, private=private, exist_ok=True)), False


def _push(
    files: dict[str, Path], repo_id: str, revision: str, private: bool, token: str, message: str
) -> tuple[str, bool, str]:
    """Create the repo (and branch) if missing, then commit what differs from the remote, at once.

    A repo or branch this publish created is deleted again when the publish fails before its commit
    lands (``_after_failure``), so a failed first publish normally leaves no empty repo behind.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.errors import RevisionNotFoundError
    from huggingface_hub.hf_api import RepoFile
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()
    api = HfApi(token=token)
    url, repo_is_new = _create_or_find_repo(api, repo_id, private)
    created: Created = "repo" if repo_is_new else None
    if private and not repo_is_new and not api.repo_info(repo_id, repo_type=REPO_TYPE).private:
        raise PublishError(
            f"{repo_id} exists and is public: make it private on the Hub first, or drop --private"
        )
    head: str | None = None
    try:
        try:
            head = api.repo_info(repo_id, repo_type=REPO_TYPE, revision=revision).sha
        except RevisionNotFoundError:
            api.create_branch(repo_id, branch=revision, repo_type=REPO_TYPE)
            created = created or "branch"
            head = api.repo_info(repo_id, repo_type=REPO_TYPE, revision=revision).sha
        if head is None:
            raise PublishError(f"the Hub reported no head commit for {revision!r}")
        remote = {
            entry.path: entry
            for entry in api.list_repo_tree(repo_id, repo_type=REPO_TYPE, revision=head, recursive=True)
            if isinstance(entry, RepoFile)
        }
        operations: list[CommitOperationAdd | CommitOperationDelete] = [
            CommitOperationAdd(path, str(local))
            for path, local in files.items()
            if path not in remote or not _unchanged(remote[path], local)
        ]
        operations += [
            CommitOperationDelete(path) for path in sorted(remote) if _managed(path) and path not in files
        ]
        if not operations:  # a new branch at a head that already holds this tree is published too
            return head, False, url
        info = api.create_commit(
            repo_id,
            operations,
            commit_message=message,
            repo_type=REPO_TYPE,
            revision=revision,
            parent_commit=head,
        )
    except (Exception, KeyboardInterrupt) as error:  # Ctrl-C mid-upload is cleaned up too
        state = _after_failure(api, repo_id, revision, head, created)
        if isinstance(error, KeyboardInterrupt):
            raise PublishError(f"publish interrupted before its commit ({state})") from None
        raise PublishError(f"publish failed and made no commit ({state}): {_describe(error)}") from None
    return info.oid, True, url


def _after_failure(api: Any, repo_id: str, revision: str, head: str | None, created: Created) -> str:
    """What a failed publish left, in words. A repo or branch it created goes again, unless its head
    moved (the commit may have landed after all) or, for a repo, any other ref points elsewhere:
    nothing is deleted that may hold somebody's commit."""
    now = _head_or_none(api, repo_id, revision)  # re-read, so the message states what is true
    if now is None:
        return "the repo could not be re-read: check it"
    if head is not None and now != head:
        return f"the head moved from {head} to {now}: check it"
    if created is None:
        return f"the repository is still at its previous commit {now}"
    what = "repository" if created == "repo" else f"branch {revision!r}"
    try:
        if created == "repo":
            refs = api.list_repo_refs(repo_id, repo_type=REPO_TYPE, include_pull_requests=True)
            others = [
                ref.ref
                for ref in [*refs.branches, *refs.tags, *(refs.pull_requests or [])]
                if ref.target_commit != now
            ]
            if others:  # somebody else wrote to the new repository meanwhile: theirs is kept
                return f"the repository this publish created now also holds {', '.join(others)}: check it"
            api.delete_repo(repo_id, repo_type=REPO_TYPE)
        else:
            api.delete_branch(repo_id, branch=revision, repo_type=REPO_TYPE)
    except Exception as error:  # the network may be what failed
        return f"the {what} this publish created is still there, and deleting it failed: {_describe(error)}"
    return f"the {what} this publish created was deleted again"


def _head_or_none(api: Any, repo_id: str, revision: str) -> str | None:
    try:
        return api.repo_info(repo_id, repo_type=REPO_TYPE, revision=revision).sha
    except Exception:  # the network may be what failed; the caller reports "unknown"
        return None


def _describe(error: BaseException) -> str:
    """The error and, where it adds something, its cause (an upload error wraps the HTTP one)."""
    text = f"{type(error).__name__}: {error}".strip()
    cause = error.__cause__
    if cause is not None and str(cause).strip().split("\n")[0] not in text:
        text += f" <- {type(cause).__name__}: {str(cause).strip()}"
    return text


def publish(
    variants: Sequence[str],
    repo_id: str,
    *,
    root: Path = Path("."),
    private: bool = False,
    revision: str = "main",
    dry_run: Path | None = None,
    include_em: bool = False,
    license_id: str = "unknown",
    max_shard_bytes: int = MAX_SHARD_BYTES,
) -> PublishResult:
    """Publish the variants' corpora to ``repo_id`` (or, with ``dry_run``, write the tree there)."""
    from charforge import __version__

    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise PublishError(f"--repo-id {repo_id!r}: expected ORG/NAME")
    corpora, skipped = collect(variants, root, include_em)
    if dry_run is not None:
        _check_dry_run_target(dry_run)
        with atomic_dir(dry_run) as temp:
            build_tree(corpora, repo_id, root, temp, license_id, max_shard_bytes)
        files = [
            path.relative_to(dry_run).as_posix() for path in sorted(dry_run.rglob("*")) if path.is_file()
        ]
        return PublishResult(corpora, files, skipped)
    allow_hub_network()
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise PublishError("no Hugging Face token: set HF_TOKEN or log in with `hf auth login`")
    configs = ", ".join(corpus.config for corpus in corpora)
    message = f"charforge {__version__}: publish {configs}"
    with tempfile.TemporaryDirectory(prefix="charforge-publish-") as temp:
        files = build_tree(corpora, repo_id, root, Path(temp), license_id, max_shard_bytes)
        _refuse_token_in_tree(files, token)
        try:
            commit, changed, url = _push(files, repo_id, revision, private, token, message)
        except PublishError as error:
            raise PublishError(_scrub(str(error), token)) from None
        except Exception as error:  # HTTP, auth and connection errors: a message, never a traceback
            raise PublishError(_scrub(f"publish failed, no commit made: {_describe(error)}", token)) from None
        return PublishResult(corpora, list(files), skipped, commit, changed, url)
