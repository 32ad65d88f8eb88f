"""Prompt generation on a tiny random model: exact sizes per level, validation, the cache, backfill
failing loudly, and a run killed with SIGKILL whose rerun keeps every row exactly once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from support.processes import kill_group, start_group

from charforge.generators.chat import GenerationRun
from charforge.generators.prompts import (
    SEED_SITUATION,
    PromptShortfall,
    Selection,
    Slot,
    generate_prompts,
    jaccard,
    select,
    shingles,
)
from charforge.schemas import Constitution
from charforge.schemas.params import GenerationConfig, ModelRole, PromptsConfig
from charforge.schemas.situations import SituationTaxonomy

REPO = Path(__file__).resolve().parents[2]
LEVELS = {0: {"paraphrase": True}, 1: {"situations": 2, "framings": 1}, 3: {}}

# Every generation runs in a fresh interpreter: distilabel forks its workers, and forking a process
# that already ran torch (as the pytest process has, in other tests) can crash in OpenMP.
RUN_SCRIPT = """
import json, sys
from pathlib import Path
sys.path[:0] = [sys.argv[1], str(Path(sys.argv[1]).parent)]  # this folder and tests/ (support)
import test_prompts as t
from charforge.generators.prompts import PromptShortfall
try:
    records, rejected = t.run_here(Path(sys.argv[2]), Path(sys.argv[3]), **json.loads(sys.argv[5]))
except PromptShortfall as error:
    payload = {"shortfall": error.shortfall, "rejected": error.rejected}
    Path(sys.argv[4]).write_text(json.dumps(payload))
    sys.exit(3)
Path(sys.argv[4]).write_text(json.dumps({"records": records, "rejected": rejected}))
"""


def constitution() -> Constitution:
    return Constitution.model_validate(
        yaml.safe_load((REPO / "corpora/constitutions/humor.yaml").read_text())
    )


def taxonomy() -> SituationTaxonomy:
    return SituationTaxonomy.model_validate(yaml.safe_load((REPO / "corpora/situations.yaml").read_text()))


def run_here(model: Path, cache: Path, level: int, **overrides: object) -> tuple[list[dict], dict[str, int]]:
    config = PromptsConfig(
        **{"prompts_per_trait": 9, "max_traits": 2, "levels": LEVELS, "backfill_rounds": 3, **overrides}
    )
    teacher = ModelRole(model=str(model), sampling={"temperature": 1.0, "max_new_tokens": 40})
    run = GenerationRun(f"humor-d{level}-s0", 0, GenerationConfig(batch_size=4), cache)
    records, rejected, _ = generate_prompts(constitution(), taxonomy(), config, level, teacher, run)
    return records, dict(rejected)


def command(model: Path, cache: Path, out: Path, **arguments: object) -> list[str]:
    here = str(Path(__file__).parent)
    return [sys.executable, "-c", RUN_SCRIPT, here, str(model), str(cache), str(out), json.dumps(arguments)]


def run(model: Path, cache: Path, level: int, **overrides: object) -> tuple[list[dict], dict[str, int]]:
    """``run_here`` in a subprocess; raises PromptShortfall as the child did."""
    out = cache.parent / f"result-{time.monotonic_ns()}.json"
    result = subprocess.run(
        command(model, cache, out, level=level, **overrides), capture_output=True, timeout=600
    )
    if result.returncode == 3:
        payload = json.loads(out.read_text())
        error = PromptShortfall(payload["shortfall"], Counter(payload["rejected"]))
        raise error
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-4000:]
    payload = json.loads(out.read_text())
    return payload["records"], payload["rejected"]


def test_every_level_has_the_same_size_and_validates(tiny_model_with_stops: Path, tmp_path: Path) -> None:
    from charforge.corpus import write_corpus
    from charforge.validate import validate_file

    sizes = {}
    for level in LEVELS:
        records, _ = run(tiny_model_with_stops, tmp_path / "cache", level)
        per_trait: dict[str, int] = {}
        for record in records:
            per_trait[record["trait_id"]] = per_trait.get(record["trait_id"], 0) + 1
        sizes[level] = per_trait
        seeds = [r for r in records if r["is_seed"]]
        assert len(seeds) == 10 and all(r["situation"] == SEED_SITUATION for r in seeds)
        generated = [r for r in records if not r["is_seed"]]
        situations = {r["situation"] for r in generated}
        if level == 0:
            assert len(situations) == 1 and all("framing" not in r for r in generated)
        elif level == 1:
            assert len(situations) <= 2 * 2  # two situations per trait
        path = tmp_path / f"humor-d{level}-s0" / "prompts.parquet"
        write_corpus(records, path, "prompts", variant=f"humor-d{level}-s0")
        report = validate_file(path)
        assert report.valid and report.charforge, report.problems
        assert len({r["id"] for r in records}) == len(records)
    assert all(per_trait == {"light-touch": 9, "laugh-with-not-at": 9} for per_trait in sizes.values())


def _generated_batches(cache: Path) -> dict[str, int]:
    """The generation step's cached batch files and their modification times."""
    return {
        str(path): path.stat().st_mtime_ns
        for path in cache.rglob("*.parquet")
        if "chat_generation" in str(path)
    }


def test_same_params_same_corpus_and_the_cache_is_hit(tiny_model_with_stops: Path, tmp_path: Path) -> None:
    first, _ = run(tiny_model_with_stops, tmp_path / "cache", 3)
    batches = _generated_batches(tmp_path / "cache")
    assert batches
    again, _ = run(tiny_model_with_stops, tmp_path / "cache", 3)
    assert _generated_batches(tmp_path / "cache") == batches  # served from the cache: nothing regenerated
    fresh, _ = run(tiny_model_with_stops, tmp_path / "other-cache", 3)
    assert again == first == fresh  # reproducible from params + seed, cached or not


def test_backfill_shortfall_fails_loudly(tiny_model_with_stops: Path, tmp_path: Path) -> None:
    with pytest.raises(PromptShortfall) as caught:
        run(tiny_model_with_stops, tmp_path / "cache", 3, max_prompt_chars=20, backfill_rounds=1)
    assert set(caught.value.shortfall) == {"light-touch", "laugh-with-not-at"}
    assert caught.value.rejected["too_long"] > 0
    assert "missing per trait" in str(caught.value) and "too_long" in str(caught.value)


def test_near_duplicates_are_measured_on_word_shingles() -> None:
    a = shingles("My printer jammed again before my big presentation today")
    b = shingles("my printer jammed again, before my big presentation today!")
    c = shingles("How do I fold a fitted sheet without losing my mind")
    assert jaccard(a, b) == 1.0 and jaccard(a, c) == 0.0


def _wait_for_generated_batch(cache: Path, deadline_s: float) -> None:
    """Until the generation step has cached its first batch (distilabel's per-batch step data)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if any("chat_generation" in str(path) for path in cache.rglob("steps_data/*/batch_*.json")):
            return
        time.sleep(0.05)
    raise AssertionError("no generation batch was cached in time")


def test_sigkill_then_rerun_keeps_every_row_once(tiny_model_with_stops: Path, tmp_path: Path) -> None:
    # A killed run leaves a cache distilabel cannot resume from (it waited forever for the batch in
    # flight); the rerun must notice, generate again, and give exactly the uninterrupted corpus.
    # 80 slots (20 batches, plus backfill) leave most of the run after the first batch, so the kill
    # lands mid-run even on a slow machine.
    cache, out = tmp_path / "cache", tmp_path / "rows.json"
    size = {"prompts_per_trait": 40}
    argv = command(tiny_model_with_stops, cache, out, level=3, **size)
    victim = start_group(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_generated_batch(cache, 240)
    finally:
        kill_group(victim, signal.SIGKILL)  # the runner and its distilabel workers, mid-run
        victim.wait()
    assert not out.exists()
    assert list(cache.rglob("charforge-unfinished"))
    rerun = subprocess.run(argv, timeout=600, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert "last run was killed" in rerun.stderr
    assert not list(cache.rglob("charforge-unfinished"))
    resumed = json.loads(out.read_text())["records"]
    uninterrupted, _ = run(tiny_model_with_stops, tmp_path / "fresh-cache", 3, **size)
    assert [r["id"] for r in resumed] == [r["id"] for r in uninterrupted]
    assert resumed == uninterrupted


def _slot(trait: str, index: int) -> Slot:
    return Slot(f"{trait}.r0.{index:03d}", trait, "everyday-task", "a student", "casual", "short")


def test_filters_trim_and_count_by_reason() -> None:
    traits = constitution().traits[:1]
    trait = traits[0].id
    config = PromptsConfig(prompts_per_trait=9, levels=LEVELS, max_prompt_chars=200)
    generated = [
        (_slot(trait, 0), "  ", False),
        (_slot(trait, 1), "Sure! Here is a message a user might send.", False),
        (_slot(trait, 2), "The message is: my kettle broke again, what now?", False),
        (_slot(trait, 3), "x" * 300, False),
        (_slot(trait, 4), traits[0].questions[0].upper(), False),  # a seed question, shouted
        (
            _slot(trait, 5),
            "My kettle broke again this morning. Can you help me pick a new one that lasts",
            True,
        ),
        (_slot(trait, 6), "no sentence end and cut off", True),
        (_slot(trait, 7), '"My kettle broke and I need to choose a new one that lasts for years."', False),
        (_slot(trait, 8), "My kettle broke and I need to choose a new one that lasts for ages.", False),
    ]
    selection = Selection()
    select(generated, traits, config, selection)
    kept = [text for _, text in selection.kept[trait]]
    assert kept == [
        "My kettle broke again this morning.",  # cut off: trimmed to its last full sentence
        "My kettle broke and I need to choose a new one that lasts for years.",  # outer quotes removed
    ]
    assert selection.trimmed == 1
    assert dict(selection.rejected) == {
        "empty": 1,
        "meta_text": 2,
        "too_long": 1,
        "duplicate": 1,
        "cut_off": 1,
        "near_duplicate": 1,
    }
    strict = PromptsConfig(prompts_per_trait=9, levels=LEVELS, trim_cut_off=False)
    selection = Selection()
    select(generated[5:6], traits, strict, selection)
    assert selection.rejected == {"cut_off": 1} and not selection.kept
