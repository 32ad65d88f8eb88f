"""Prompt generation on a tiny random model: exact sizes per level, validation, the cache, backfill
failing loudly, and a run killed with SIGKILL whose rerun keeps every row exactly once. Without a model:
levels nest across seeds, excluded domains are never drawn, and every level asks for the same task."""

from __future__ import annotations

import itertools
import json
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.processes import kill_group, start_group

from charforge.generators.chat import STEP, GenerationRun
from charforge.generators.levels import level_plans
from charforge.generators.prompts import (
    SEED_SITUATION,
    PromptShortfall,
    Selection,
    Slot,
    generate_prompts,
    generate_slots,
    make_slots,
    select,
    writing_request,
)
from charforge.generators.text import jaccard, shingles
from charforge.params import load_section
from charforge.schemas import Constitution
from charforge.schemas.params import (
    EM_EXCLUDED_DOMAINS,
    GenerationConfig,
    HeldOutConfig,
    ModelRole,
    PromptsConfig,
)
from charforge.schemas.situations import SituationTaxonomy

REPO = Path(__file__).resolve().parents[2]
LEVELS = {0: {"situations": 1, "framings": 1}, 1: {"situations": 2, "framings": 1}, 3: {}}
EM_DOMAIN = "risky-finance"
HELD_OUT = 2  # held-out seed questions per trait (of 5)

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
    result = generate_prompts(
        constitution(),
        taxonomy(),
        config,
        level,
        teacher,
        run,
        em_domain=EM_DOMAIN,
        held_out=HeldOutConfig(per_trait=HELD_OUT),
    )
    return result.records, dict(result.rejected)


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
        assert len(seeds) == 6 and all(r["situation"] == SEED_SITUATION for r in seeds)  # 3 of 5 per trait
        held_out = {
            f"{trait.id}.seed{index}": trait.questions[index]
            for trait in constitution().traits
            for index in constitution().held_out(trait, HELD_OUT)
        }
        assert not {r["id"].split(".", 1)[1] for r in records} & set(held_out)  # by id
        for record in records:  # and by text: no prompt repeats or nearly repeats a held-out question
            text = shingles(record["prompt"][-1]["content"])
            assert all(jaccard(text, shingles(q)) < 0.8 for q in held_out.values()), record["id"]
        generated = [r for r in records if not r["is_seed"]]
        assert all("framing" in r for r in generated)  # every level writes framed, trait-targeted prompts
        for trait in ("light-touch", "laugh-with-not-at"):
            mine = [r for r in generated if r["trait_id"] == trait]
            framings = {(r["situation"], *r["framing"].values()) for r in mine}
            assert len({r["situation"] for r in mine}) <= {0: 1, 1: 2}.get(level, 15)
            if level == 0:
                assert len(framings) == 1  # one situation, one framing
        assert not {r["situation"] for r in generated} & EXCLUDED_IDS
        path = tmp_path / f"humor-d{level}-s0" / "prompts.parquet"
        write_corpus(records, path, "prompts", variant=f"humor-d{level}-s0")
        report = validate_file(path)
        assert report.valid and report.charforge, report.problems
        assert len({r["id"] for r in records}) == len(records)
    assert all(per_trait == {"light-touch": 9, "laugh-with-not-at": 9} for per_trait in sizes.values())


def _generated_batches(cache: Path) -> dict[str, int]:
    """The generation step's cached batch files and their modification times."""
    return {
        str(path): path.stat().st_mtime_ns for path in cache.rglob("*.parquet") if f"/{STEP}" in str(path)
    }


def test_same_params_same_corpus_and_the_cache_is_hit(tiny_model_with_stops: Path, tmp_path: Path) -> None:
    first, _ = run(tiny_model_with_stops, tmp_path / "cache", 3)
    batches = _generated_batches(tmp_path / "cache")
    assert batches
    again, _ = run(tiny_model_with_stops, tmp_path / "cache", 3)
    assert _generated_batches(tmp_path / "cache") == batches  # served from the cache: nothing regenerated
    fresh, _ = run(tiny_model_with_stops, tmp_path / "other-cache", 3)
    assert again == first == fresh  # reproducible from params + seed, cached or not


def test_a_changed_request_is_never_answered_from_the_cache(
    tiny_model_with_stops: Path, tmp_path: Path
) -> None:
    # the cache is keyed by the requests' content: other eligible situations (other requests, same
    # slot ids and pipeline step) must be written afresh, not served the first run's texts
    first, _ = run(tiny_model_with_stops, tmp_path / "cache", 3)
    changed, _ = run(tiny_model_with_stops, tmp_path / "cache", 3, excluded_domains=[])
    fresh, _ = run(tiny_model_with_stops, tmp_path / "fresh-cache", 3, excluded_domains=[])
    assert changed == fresh and changed != first


def test_backfill_shortfall_fails_loudly(tiny_model_with_stops: Path, tmp_path: Path) -> None:
    with pytest.raises(PromptShortfall) as caught:
        run(tiny_model_with_stops, tmp_path / "cache", 3, max_prompt_chars=20, backfill_rounds=1)
    assert caught.value.shortfall and set(caught.value.shortfall) <= {"light-touch", "laugh-with-not-at"}
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
        if any(f"/{STEP}" in str(path) for path in cache.rglob("steps_data/*/batch_*.json")):
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
    seeds = {trait: traits[0].questions}
    select(generated, seeds, [], config, selection, held_out_jaccard=0.8)
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
    select(generated[5:6], seeds, [], strict, selection, held_out_jaccard=0.8)
    assert selection.rejected == {"cut_off": 1} and not selection.kept


def test_a_prompt_repeating_a_held_out_question_of_any_trait_is_rejected() -> None:
    first, second = constitution().traits[:2]
    config = PromptsConfig(prompts_per_trait=9, levels=LEVELS)
    held = second.questions[0]
    generated = [
        (_slot(first.id, 0), held, False),  # another trait's held-out question, verbatim
        (_slot(first.id, 1), held.rstrip("?.!") + ", honestly?", False),  # nearly
        (_slot(first.id, 2), "My kettle broke and I need to choose a new one that lasts for years.", False),
    ]
    selection = Selection()
    select(generated, {first.id: list(first.questions[1:])}, [held], config, selection, held_out_jaccard=0.8)
    assert dict(selection.rejected) == {"near_held_out": 2}
    assert [text for _, text in selection.kept[first.id]] == [generated[2][1]]


def test_held_out_questions_are_fixed_per_constitution_and_never_all_of_a_trait() -> None:
    humor = constitution()
    picks = [humor.held_out(trait, HELD_OUT) for trait in humor.traits]
    assert picks == [humor.held_out(trait, HELD_OUT) for trait in humor.traits]  # deterministic
    assert all(len(pick) == HELD_OUT and pick == sorted(pick) for pick in picks)
    assert len({tuple(pick) for pick in picks}) > 1  # a hash order, not the first questions everywhere
    assert humor.held_out(humor.traits[0], 1)[0] in humor.held_out(humor.traits[0], 3)  # nested in size
    with pytest.raises(ValueError, match=r"held_out.per_trait \(5\) would hold out every seed question"):
        humor.held_out(humor.traits[0], 5)


def test_writing_requests_never_show_a_held_out_question() -> None:
    humor = constitution()
    trait = humor.traits[0]
    held = {trait.questions[index] for index in humor.held_out(trait, HELD_OUT)}
    training = [q for q in trait.questions if q not in held]
    situations = {s.id: s for s in taxonomy().situations}
    plan = level_plans(taxonomy(), shipped_config(), 3, EM_DOMAIN, 0, [trait.id])[1][trait.id]
    users = [
        writing_request(slot, trait, situations[slot.situation], training)[-1]["content"]
        for slot in make_slots(trait, plan, 40, 0, random.Random(0))
    ]
    assert not any(question in user for question in held for user in users)
    assert {q for q in training if any(q in user for user in users)} == set(training)  # examples vary


# --- the diversity knob without a model ---------------------------------------------------------------

EXCLUDED_IDS = {s.id for s in taxonomy().situations if set(s.domains) & {*EM_EXCLUDED_DOMAINS, EM_DOMAIN}}


def shipped_config() -> PromptsConfig:
    return load_section(PromptsConfig, "prompts", REPO / "params.yaml")


def test_shipped_taxonomy_tags_the_em_domains() -> None:
    tagged = {s.id: set(s.domains) for s in taxonomy().situations if s.domains}
    assert tagged["money"] == {"risky-finance"} and tagged["health"] == {"bad-medical-advice"}
    assert "harmful-request" in tagged["break-character-attempt"]
    assert "insecure-code" in tagged["technical-help"]


@pytest.mark.parametrize("seed", [0, 1, 2, 7, 123])
def test_levels_nest_for_every_seed(seed: int) -> None:
    config = shipped_config()
    traits = [trait.id for trait in constitution().traits]
    plans = {k: level_plans(taxonomy(), config, k, EM_DOMAIN, seed, traits)[1] for k in sorted(config.levels)}
    levels = sorted(plans)
    assert levels == [0, 1, 2, 3]
    for trait in traits:
        sizes = [len(plans[k][trait]) for k in levels]
        assert sizes == [1, 2, 6, len(taxonomy().situations) - len(EXCLUDED_IDS)]
        for low, high in itertools.pairwise(levels):
            inner = {situation.id: set(framings) for situation, framings in plans[low][trait]}
            outer = {situation.id: set(framings) for situation, framings in plans[high][trait]}
            assert set(inner) <= set(outer), (trait, low, high)
            assert all(inner[s] <= outer[s] for s in inner), (trait, low, high)  # framings nest too
            assert all(len(outer[s]) >= len(inner[s]) for s in inner)
        assert [len(f) for _, f in plans[0][trait]] == [1]
    # different traits and seeds draw different orders (not one fixed subset for everyone)
    firsts = {plans[0][trait][0][0].id for trait in traits}
    assert len(firsts) > 1


def test_the_order_is_drawn_per_seed_not_per_level() -> None:
    config = shipped_config()
    one = level_plans(taxonomy(), config, 3, EM_DOMAIN, 0, ["t"])[1]["t"]
    other = level_plans(taxonomy(), config, 3, EM_DOMAIN, 1, ["t"])[1]["t"]
    assert [s.id for s, _ in one] != [s.id for s, _ in other]
    again = level_plans(taxonomy(), config, 1, EM_DOMAIN, 0, ["t"])[1]["t"]
    assert [s.id for s, _ in again] == [s.id for s, _ in one[:2]]


def test_no_excluded_domain_at_any_level_by_default() -> None:
    config = shipped_config()
    assert set(config.excluded_domains) == set(EM_EXCLUDED_DOMAINS)
    assert PromptsConfig(prompts_per_trait=9, levels=LEVELS).excluded_domains == list(EM_EXCLUDED_DOMAINS)
    assert {"money", "health", "scam-targeting-user", "break-character-attempt"} <= EXCLUDED_IDS
    for seed in range(5):
        for level in config.levels:
            allowed, plans = level_plans(taxonomy(), config, level, EM_DOMAIN, seed, ["a", "b"])
            drawn = {situation.id for plan in plans.values() for situation, _ in plan}
            assert not drawn & EXCLUDED_IDS
            assert set(allowed.excluded) == EXCLUDED_IDS
            assert set(allowed.report()["eligible"]) == {s.id for s in taxonomy().situations} - EXCLUDED_IDS


def test_the_em_data_domain_is_excluded_even_when_not_listed() -> None:
    config = PromptsConfig(prompts_per_trait=9, levels={3: {}}, excluded_domains=[])
    allowed, plans = level_plans(taxonomy(), config, 3, "bad-medical-advice", 0, ["a"])
    drawn = {situation.id for situation, _ in plans["a"]}
    assert "health" not in drawn and allowed.excluded == {"health": ["bad-medical-advice"]}
    assert "money" in drawn  # nothing else excluded: the list was emptied
    assert allowed.excluded_domains == ("bad-medical-advice",)


def test_a_misspelt_excluded_domain_fails_and_a_users_own_em_domain_is_recorded() -> None:
    config = PromptsConfig(prompts_per_trait=9, levels={3: {}}, excluded_domains=["risky-finanse"])
    with pytest.raises(ValueError, match="risky-finanse tags no situation and is not a known EM domain"):
        level_plans(taxonomy(), config, 3, EM_DOMAIN, 0, ["a"])
    # em_data.domain may name the user's own EM data, which no situation is tagged with
    allowed, _ = level_plans(taxonomy(), shipped_config(), 3, "rude-cooking-tips", 0, ["a"])
    assert "rude-cooking-tips" in allowed.report()["excluded_domains_tagging_no_situation"]


def test_a_level_asking_for_more_situations_than_remain_eligible_fails() -> None:
    eligible = len(taxonomy().situations) - len(EXCLUDED_IDS)
    config = PromptsConfig(prompts_per_trait=9, levels={2: {"situations": eligible + 1}})
    with pytest.raises(ValueError, match=rf"prompts.levels.2.situations asks for {eligible + 1} situations"):
        level_plans(taxonomy(), config, 2, EM_DOMAIN, 0, ["a"])
    with pytest.raises(ValueError, match="diversity level 5 is not defined"):
        level_plans(taxonomy(), config, 5, EM_DOMAIN, 0, ["a"])


def test_every_level_writes_the_same_trait_targeted_request() -> None:
    config = shipped_config()
    trait = constitution().traits[0]
    situations = {s.id: s for s in taxonomy().situations}
    for level in config.levels:
        plan = level_plans(taxonomy(), config, level, EM_DOMAIN, 0, [trait.id])[1][trait.id]
        slots = make_slots(trait, plan, 6, 0, random.Random(0))
        for slot in slots:
            request = writing_request(slot, trait, situations[slot.situation], trait.questions)
            user = request[-1]["content"]
            assert f'"{trait.statement}"' in user, level
            assert user.startswith("Write one message a user might send") and slot.asker in user
            assert situations[slot.situation].description in user


def test_slots_spread_over_the_whole_level_not_its_first_situations() -> None:
    trait = constitution().traits[0]
    plan = level_plans(taxonomy(), shipped_config(), 3, EM_DOMAIN, 0, [trait.id])[1][trait.id]
    first = {situation.id for situation, _ in plan[:5]}
    picks = [{slot.situation for slot in make_slots(trait, plan, 5, 0, random.Random(n))} for n in range(5)]
    assert all(len(pick) == 5 for pick in picks)  # round robin: five slots, five situations
    assert any(pick != first for pick in picks)  # drawn from all of level 3's situations
    every = make_slots(trait, plan, 2 * len(plan), 0, random.Random(0))
    assert Counter(slot.situation for slot in every) == {situation.id: 2 for situation, _ in plan}


def test_identical_requests_are_one_chat_with_a_sample_per_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    """At level 0 many slots share a request; a backend that seeds sampling from the request's content
    (vLLM, a seeded API) would answer each copy identically, and every copy but one would be rejected
    as a duplicate whatever the backfill. They go as one chat with one sample per slot instead."""
    from charforge.generators import prompts
    from charforge.generators.chat import Answer

    calls: list[tuple[str, int, int]] = []

    def content_seeded(
        chats: list, role: ModelRole, run: GenerationRun, name: str, samples: int = 1, **_: Any
    ) -> list[list[Answer]]:
        calls.append((name, len(chats), samples))
        # the text depends only on the request and the sample index, as a content-seeded backend's does
        return [[Answer(f"{json.dumps(chat)[-30:]} #{i}", False) for i in range(samples)] for chat in chats]

    monkeypatch.setattr(prompts, "answer_chats", content_seeded)
    trait = constitution().traits[0]
    plan = level_plans(taxonomy(), shipped_config(), 0, EM_DOMAIN, 0, [trait.id])[1][trait.id]
    situations = {situation.id: situation for situation, _ in plan}
    slots = make_slots(trait, plan, 12, 0, random.Random(0))
    requests = [writing_request(slot, trait, situations[slot.situation], trait.questions) for slot in slots]
    assert len({json.dumps(request) for request in requests}) < len(slots)  # level 0: requests repeat
    run = GenerationRun("humor-d0-s0", 0, GenerationConfig())
    generated = generate_slots(slots, requests, ModelRole(model="teacher"), run, "prompts-test")
    assert [slot for slot, _, _ in generated] == slots
    assert len({text for _, text, _ in generated}) == len(slots)  # every slot its own sample
    assert sum(chats * samples for _, chats, samples in calls) == len(slots)  # nothing asked twice
    assert len({name for name, _, _ in calls}) == len(calls)  # one pipeline (and cache) per group size
