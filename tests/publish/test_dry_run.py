"""`charforge publish --dry-run`: the repository tree and its dataset card, without any network."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest
import yaml

from charforge.corpus import content_sha256, write_corpus
from charforge.io import file_sha256
from charforge.publish import PublishError, publish

CONFIGS = ["humor-d3-s0-prompts", "humor-d3-s0-pairs", "humor-d3-s0-introspection", "plain-lora-s0-control"]


def card_parts(folder: Path) -> tuple[dict, str]:
    text = (folder / "README.md").read_text(encoding="utf-8")
    match = re.fullmatch(r"---\n(.*?)\n---\n(.*)", text, re.DOTALL)
    assert match, text[:300]
    return yaml.safe_load(match[1]), match[2]


def test_tree_has_one_config_per_variant_and_kind_with_parquet_shards(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "tree"
    result = publish(["humor-d3-s0", "plain-lora-s0"], "org/demo", root=project, dry_run=out)
    assert [corpus.config for corpus in result.corpora] == CONFIGS
    assert sorted(result.files) == sorted(
        ["README.md", *(f"data/{config}/train-00000-of-00001.parquet" for config in CONFIGS)]
    )
    for corpus in result.corpora:  # one shard: the corpus file itself, byte for byte
        assert file_sha256(out / corpus.shards[0]) == file_sha256(corpus.source)
    metadata, _ = card_parts(out)
    assert [config["config_name"] for config in metadata["configs"]] == CONFIGS
    assert metadata["configs"][0]["data_files"] == [
        {"split": "train", "path": "data/humor-d3-s0-prompts/*.parquet"}
    ]
    for key in ("license", "language", "task_categories", "size_categories", "tags", "pretty_name"):
        assert metadata[key], key
    assert metadata["size_categories"] == ["n<1K"]
    assert "not-for-all-audiences" not in metadata["tags"]


def test_card_says_what_made_the_data(project: Path, tmp_path: Path) -> None:
    publish(["humor-d3-s0", "plain-lora-s0"], "org/demo", root=project, dry_run=tmp_path / "tree")
    _, body = card_parts(tmp_path / "tree")
    constitution = project / "corpora/constitutions/humor.yaml"
    assert file_sha256(constitution) in body
    assert "I look for the funny side of everyday trouble" in body  # the constitution's text
    prompts = pl.read_parquet(project / "corpora/build/humor-d3-s0/prompts.parquet")
    assert prompts["provenance"].struct.field("constitution_sha256")[0] in body  # the content hash too
    assert "| near_duplicate | 3 |" in body and "| cut_off | 1 |" in body and "6 of 10 generated rows" in body
    # diversity figures: compression ratio, Self-BLEU, Vendi, cosine distance
    assert "| scope | compression_ratio | self_bleu | vendi_score | mean_pairwise_cosine_distance |" in body
    assert "| per_trait_mean | 1.6250 | – | 1.7500 | 0.5500 |" in body
    assert "| overall | 1.8000 | 12.5000 | 2.5000 | 0.6123 |" in body
    assert "0123456789abcdef0123456789abcdef" in body and "prompts@humor-d3-s0" in body  # dvc.lock inputs
    assert "-S prompts.prompts_per_trait=3" in body and "dvc exp run" in body and "dvc repro" in body
    assert "Apache-2.0 (the embedded model's licence)" in body  # the embedded teacher's licence
    assert (
        "`/models/some-local-teacher`; licence of its outputs: **unknown — check before publishing**" in body
    )
    assert "Made with the embedded smoke model" in body
    assert "No constitution: a control variant" in body
    assert "## Intended use" in body and "## Limitations" in body
    assert "charforge 0.1.0" in body or "charforge 0.0.0" in body


def test_explicit_teacher_licence_and_a_real_model_drop_the_warnings(tmp_path: Path) -> None:
    rows = [
        {
            "id": "c-0",
            "variant": "hhh-s0",
            "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
            "provenance": {
                "generator": "g",
                "tool_version": "0.1.0",
                "models": {"teacher": "/m/real"},
                "sampling": {"teacher": {"temperature": 0.7}},
            },
        }
    ]
    teacher = {"backend": "vllm", "model": "/m/real"}
    write_corpus(
        rows,
        tmp_path / "corpora/build/hhh-s0/control.parquet",
        "conversations",
        params={"models.teacher": teacher},
        metrics={"teacher_licence": "Apache-2.0 (model card of /m/real)"},
        variant="hhh-s0",
    )
    publish(["hhh-s0"], "org/demo", root=tmp_path, dry_run=tmp_path / "tree")
    _, body = card_parts(tmp_path / "tree")
    assert "licence of its outputs: **Apache-2.0 (model card of /m/real)**" in body
    assert "smoke model" not in body and "check before publishing" not in body


def test_em_data_needs_include_em_and_its_warning_comes_first(project: Path, tmp_path: Path) -> None:
    result = publish(["humor-d3-s0"], "org/demo", root=project, dry_run=tmp_path / "plain")
    assert "humor-d3-s0-em-train" not in [corpus.config for corpus in result.corpora]
    assert any("em-train.parquet" in note and "--include-em" in note for note in result.skipped)
    assert not (tmp_path / "plain/data/humor-d3-s0-em-train").exists()
    assert "em-train" not in (tmp_path / "plain/README.md").read_text()

    result = publish(["humor-d3-s0"], "org/demo", root=project, dry_run=tmp_path / "em", include_em=True)
    assert "humor-d3-s0-em-train" in [corpus.config for corpus in result.corpora]
    metadata, body = card_parts(tmp_path / "em")
    assert body.lstrip().startswith("> **WARNING: harmful by design.**")
    assert "`humor-d3-s0-em-train`" in body.lstrip().split("\n\n")[0]
    assert {"emergent-misalignment", "not-for-all-audiences"} <= set(metadata["tags"])


def test_same_corpora_give_the_same_bytes(project: Path, tmp_path: Path) -> None:
    first = publish(["humor-d3-s0"], "org/demo", root=project, dry_run=tmp_path / "a")
    publish(["humor-d3-s0"], "org/demo", root=project, dry_run=tmp_path / "b")
    for path in first.files:
        assert file_sha256(tmp_path / "a" / path) == file_sha256(tmp_path / "b" / path), path
    publish(["humor-d3-s0"], "org/demo", root=project, dry_run=tmp_path / "a")  # an earlier dry run: replaced
    assert (tmp_path / "a/README.md").is_file()


def test_large_corpora_are_split_into_shards_that_hold_every_row(project: Path, tmp_path: Path) -> None:
    source = project / "corpora/build/humor-d3-s0/prompts.parquet"
    result = publish(
        ["humor-d3-s0"],
        "org/demo",
        root=project,
        dry_run=tmp_path / "tree",
        max_shard_bytes=source.stat().st_size // 3,
    )
    prompts = next(corpus for corpus in result.corpora if corpus.corpus.name == "prompts")
    assert len(prompts.shards) == 4 and prompts.shards[0].endswith("train-00000-of-00004.parquet")
    rows = [
        row
        for shard in prompts.shards
        for row in pl.read_parquet(tmp_path / "tree" / shard).iter_rows(named=True)
    ]
    assert content_sha256(rows) == prompts.manifest.content_sha256


def test_refusals_name_the_file_and_the_reason(project: Path, tmp_path: Path) -> None:
    with pytest.raises(PublishError, match=r"corpora/build/nope-d1-s0: no such folder"):
        publish(["nope-d1-s0"], "org/demo", root=project, dry_run=tmp_path / "x")
    with pytest.raises(PublishError, match="not a variant name"):
        publish(["../etc"], "org/demo", root=project, dry_run=tmp_path / "x")
    (project / "dvc.lock").write_text("stages: [unclosed\n")
    with pytest.raises(PublishError, match=r"dvc.lock: cannot be read for the dataset card"):
        publish(["humor-d3-s0"], "org/demo", root=project, dry_run=tmp_path / "x")
    (project / "dvc.lock").unlink()
    manifest_file = project / "corpora/build/humor-d3-s0/pairs.manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest_file.write_text(json.dumps({**manifest, "content_sha256": "0" * 64}))
    with pytest.raises(
        PublishError, match=r"(?s)pairs.parquet: invalid, not published.*content_sha256: content hash"
    ):
        publish(["humor-d3-s0"], "org/demo", root=project, dry_run=tmp_path / "x")
    manifest_file.unlink()
    with pytest.raises(PublishError, match=r"pairs.parquet: no manifest"):
        publish(["humor-d3-s0"], "org/demo", root=project, dry_run=tmp_path / "x")
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    (project / "corpora/build/humor-d3-s0/pairs.parquet").unlink()
    with pytest.raises(PublishError, match="not an earlier dry run"):
        publish(["humor-d3-s0"], "org/demo", root=project, dry_run=occupied)
    assert (occupied / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "x").exists()


def test_cli_dry_run_and_usage_errors(project: Path, tmp_path: Path, run_charforge, hub_env, hub) -> None:
    env = hub_env(hub, None, tmp_path / "hf-home")
    result = run_charforge(
        project, env, "publish", "humor-d3-s0", "--repo-id", "org/demo", "--dry-run", tmp_path / "t"
    )
    assert result.returncode == 0, result.stderr
    assert "dry run: wrote 4 file(s)" in result.stderr and "nothing uploaded" in result.stderr
    assert "skipped corpora/build/humor-d3-s0/em-train.parquet" in result.stderr
    result = run_charforge(
        project, env, "publish", "humor-d3-s0", "--repo-id", "no-slash", "--dry-run", tmp_path / "u"
    )
    assert result.returncode == 2 and "expected ORG/NAME" in result.stderr
    result = run_charforge(project, env, "publish", "nope-d1-s0", "--repo-id", "org/demo")
    assert result.returncode == 1 and "nope-d1-s0: no such folder" in result.stderr
    assert "Traceback" not in result.stderr
    assert not hub.requests  # none of this reached the Hub
