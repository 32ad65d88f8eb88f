"""Canonical content hashes and corpus writing."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from support.factories import pair_row, write_parquet

from charforge.corpus import content_sha256, parquet_content_sha256, write_corpus
from charforge.schemas import Manifest


def test_content_hash_ignores_order_key_order_and_nulls() -> None:
    rows = [pair_row(i, charforge=True) for i in range(10)]
    shuffled = list(reversed(rows))
    reordered = [dict(reversed(list(row.items()))) for row in rows]
    with_nulls = [{**row, "trait_id": None} if i == 0 else row for i, row in enumerate(rows)]
    without = [
        {k: v for k, v in row.items() if not (i == 0 and k == "trait_id")} for i, row in enumerate(rows)
    ]
    assert content_sha256(rows) == content_sha256(shuffled) == content_sha256(reordered)
    assert content_sha256(with_nulls) == content_sha256(without)
    changed = [*rows[:-1], {**rows[-1], "variant": "other"}]
    assert content_sha256(changed) != content_sha256(rows)


def test_parquet_hash_equals_row_hash(tmp_path: Path, monkeypatch) -> None:
    import charforge.corpus

    monkeypatch.setattr(charforge.corpus, "HASH_BATCH_ROWS", 3)
    rows = [pair_row(i, charforge=True) for i in range(11)]
    path = write_parquet(tmp_path / "p.parquet", list(reversed(rows)))
    assert parquet_content_sha256(path) == content_sha256(rows)
    plain = [pair_row(i) for i in range(4)]  # no id column: sorted by canonical text
    assert parquet_content_sha256(write_parquet(tmp_path / "q.parquet", plain)) == content_sha256(plain)


def test_write_corpus_is_reproducible_and_records_provenance(tmp_path: Path) -> None:
    rows = [pair_row(i, charforge=True) for i in range(5)]
    first = write_corpus(
        rows, tmp_path / "a" / "pairs.parquet", "pairs", params={"seed": 1}, rejected={"empty": 3}
    )
    second = write_corpus(list(reversed(rows)), tmp_path / "b" / "pairs.parquet", "pairs", params={"seed": 1})
    assert first.content_sha256 == second.content_sha256
    manifest = Manifest.model_validate(json.loads((tmp_path / "a" / "pairs.manifest.json").read_text()))
    assert manifest == first and manifest.rejected == {"empty": 3} and manifest.rows == 5
    frame = pl.read_parquet(tmp_path / "a" / "pairs.parquet")
    assert frame.get_column("id").to_list() == sorted(row["id"] for row in rows)
    assert (tmp_path / "a" / "pairs.parquet").stat().st_mode & 0o044  # readable like a normal file


def test_an_empty_map_is_written_as_absent_and_hashes_the_same(tmp_path: Path) -> None:
    row = pair_row(1, charforge=True)
    row["provenance"] = {"generator": "g", "tool_version": "1", "models": {}, "sampling": {}}
    manifest = write_corpus([row], tmp_path / "pairs.parquet", "pairs")
    assert parquet_content_sha256(tmp_path / "pairs.parquet") == manifest.content_sha256
    assert content_sha256([row]) == manifest.content_sha256
