"""The manifest written next to every corpus charforge produces (docs/design.md §4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from charforge.schemas.base import NonBlankStr, Sha256, Slug, StrictModel

MANIFEST_SCHEMA_VERSION = 1
MANIFEST_SUFFIX = ".manifest.json"


class ParentArtifact(StrictModel):
    """An input the corpus was made from, pinned by content hash.

    ``path`` is relative to the project root (POSIX), so that two checkouts of the same project record
    the same parents: build one with ``for_file``, or move one there with ``under``."""

    path: NonBlankStr
    sha256: Sha256
    kind: str | None = None

    @classmethod
    def for_file(cls, path: Path, kind: str | None = None, root: Path = Path(".")) -> ParentArtifact:
        """The file at ``path`` (inside the project at ``root``), pinned by its sha256."""
        from charforge.io import file_sha256

        return cls(path=path.as_posix(), sha256=file_sha256(path), kind=kind).under(root)

    def under(self, root: Path) -> ParentArtifact:
        """This parent with its path relative to the project at ``root`` (unchanged outside it)."""
        from charforge.io import project_relative

        return self.model_copy(update={"path": project_relative(self.path, root)})


class Manifest(StrictModel):
    """What a corpus is, how many rows it has, its content hash and what made it.

    ``content_sha256`` is taken over the canonical rows (sorted by id, serialised deterministically),
    so it does not depend on the parquet writer and carries no timestamp.
    """

    schema_version: Literal[1]
    producer: Literal["charforge"]
    kind: NonBlankStr
    data_file: NonBlankStr = Field(description="File name of the data, in the manifest's folder.")
    variant: Slug | None = None
    rows: int = Field(ge=0)
    content_sha256: Sha256
    params: dict[str, Any] = Field(default_factory=dict)
    parents: list[ParentArtifact] = Field(default_factory=list)
    tool_version: NonBlankStr
    rejected: dict[str, int] = Field(default_factory=dict, description="Rejected rows by reason.")
    metrics: dict[str, Any] = Field(default_factory=dict)

    @field_validator("data_file")
    @classmethod
    def _bare_file_name(cls, data_file: str) -> str:
        if Path(data_file).name != data_file or "\\" in data_file or data_file in {".", ".."}:
            raise ValueError("must be a bare file name next to the manifest (no path separators)")
        return data_file

    @field_validator("rejected")
    @classmethod
    def _non_negative(cls, rejected: dict[str, int]) -> dict[str, int]:
        for reason, count in rejected.items():
            if count < 0:
                raise ValueError(f"count for reason {reason!r} is negative")
        return rejected


def manifest_path_for(data_path: Path) -> Path:
    """``corpora/build/v/pairs.parquet`` → ``corpora/build/v/pairs.manifest.json``."""
    return data_path.with_name(data_path.with_suffix("").name + MANIFEST_SUFFIX)
