"""`charforge run introspect` up against the student's context, in a scratch project on the tiny model
briefly trained to end its answers (tests/support/trained_tiny.py), with the DPO adapter folded in.

``models.student.max_model_len`` is set to what the shortest conversation kept (``min_exchanges`` = 2:
three generated turns) needs at worst, well short of the turns asked: the stage warns, naming the keys
to change, sends no turn whose prompt + ``max_new_tokens`` would pass the limit, and keeps every
conversation that reaches it to its complete exchanges, counted in the manifest's and DVC's metrics. One
token less is an error before anything is generated, and nothing is written. The stage runs in its own
process, as DVC runs it (distilabel pipelines never run in pytest's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from support.processes import communicate_or_kill, start_group

from charforge.generators.introspect import view

REPO = Path(__file__).resolve().parents[2]
VARIANT = "humor-d3-s0"
CONVERSATIONS, TURNS, MAX_NEW_TOKENS = 4, 12, 24


def params(model: Path, max_model_len: int) -> str:
    sampling = "sampling: {temperature: 1.0, max_new_tokens: 48}"
    role = f"{{model: {model}, {sampling}}}"
    student = f"{{model: {model}, max_model_len: {max_model_len}, {sampling}}}"
    return f"""
models: {{student: {student}, teacher: {role}, judge: {role}}}
generation: {{batch_size: 16, seed: 0}}
persona: {{dpo_weight: 1.0, sft_weight: 1.0}}
introspection:
  samples_per_prompt: 1
  max_reflection_prompts: 1
  conversations: {CONVERSATIONS}
  turns: {TURNS}
  max_new_tokens: {MAX_NEW_TOKENS}
  trim_cut_off: true
"""


def charforge(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CHARFORGE_CACHE": str(root / "cache"), "OMP_NUM_THREADS": "1"}
    process = start_group(  # its own session: a timeout ends its pipeline's workers too
        [sys.executable, "-m", "charforge.cli", *args],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout, stderr, _ = communicate_or_kill(process, 600)  # a timeout shows as a failed run
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def generation_setup(model: Path) -> tuple[Any, Any, str, list[str]]:
    """The plan the stage makes (the same functions, the student's tokenizer), its prompt counter, the
    generation system prompt and the openers used."""
    from transformers import AutoTokenizer

    from charforge.generators.introspect import (
        ModelContext,
        context_plan,
        generation_system_prompts,
        interleaved_openers,
        prompt_token_counter,
    )
    from charforge.schemas import Constitution
    from charforge.schemas.introspection import IntrospectionPrompts
    from charforge.schemas.params import IntrospectionConfig, ModelRole

    constitution = Constitution.model_validate(
        yaml.safe_load((REPO / "corpora/constitutions/humor.yaml").read_text())
    )
    prompts = IntrospectionPrompts.model_validate(
        yaml.safe_load((REPO / "corpora/introspection.yaml").read_text())
    )
    config = IntrospectionConfig(conversations=CONVERSATIONS, turns=TURNS, max_new_tokens=MAX_NEW_TOKENS)
    role = ModelRole(model=str(model), sampling={"max_new_tokens": MAX_NEW_TOKENS})
    system = generation_system_prompts(constitution)["self_interaction"]
    openers = interleaved_openers(prompts.openers)[:CONVERSATIONS]
    count = prompt_token_counter(AutoTokenizer.from_pretrained(model))
    plan = context_plan(system, openers, config, role, ModelContext(10**6, "", count))
    return plan, count, system, [opener.text for opener in openers]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, trained_tiny_model: Path) -> dict[str, Any]:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("introspect-context")
    for name in ("corpora/constitutions/humor.yaml", "corpora/introspection.yaml"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text((REPO / name).read_text())
    lora = get_peft_model(  # the DPO stage's output, as peft initialises it (B = 0)
        AutoModelForCausalLM.from_pretrained(trained_tiny_model),
        LoraConfig(r=2, target_modules=["q_proj", "v_proj"]),
    )
    lora.save_pretrained(root / f"models/{VARIANT}/dpo")
    plan, count, system, openers = generation_setup(trained_tiny_model)
    limit = plan.needed(plan.min_turns)  # the shortest conversation kept fits at worst; no more
    (root / "params.yaml").write_text(params(trained_tiny_model, limit))
    result = charforge(root, "run", "introspect", "--variant", VARIANT)
    return {
        "root": root,
        "model": trained_tiny_model,
        "limit": limit,
        "plan": plan,
        "count": count,
        "system": system,
        "openers": openers,
        "result": result,
    }


def test_conversations_that_reach_the_context_keep_their_complete_exchanges(project: dict[str, Any]) -> None:
    result, root, limit, plan = project["result"], project["root"], project["limit"], project["plan"]
    assert result.returncode == 0, result.stdout + result.stderr
    # warned, naming the keys to change
    assert "ContextWarning" in result.stderr, result.stderr
    for key in ("models.student.max_model_len", "introspection.max_new_tokens", "introspection.turns"):
        assert key in result.stderr, key
    manifest = json.loads((root / f"corpora/build/{VARIANT}/introspection.manifest.json").read_text())
    metrics = manifest["metrics"]
    assert metrics["context"]["max_model_len"] == limit and metrics["context"]["fits"] is False
    assert metrics["context"]["worst_case_turns_that_fit"] == plan.min_turns == 3
    assert metrics["context"]["source"] == "models.student.max_model_len"
    # every generated turn holds at least one token, so turn T can never fit: no conversation completes
    assert plan.prompts[TURNS - 1] + (TURNS - 1) + MAX_NEW_TOKENS > limit
    interaction = metrics["self_interaction"]
    assert interaction["conversations_asked"] == CONVERSATIONS and interaction["turns_asked"] == TURNS
    assert interaction["complete_conversations"] == 0
    assert interaction["truncated_by_reason"].get("context_limit", 0) >= 1, interaction
    rows = pq.read_table(root / f"corpora/build/{VARIANT}/introspection.parquet").to_pylist()
    conversations = [row for row in rows if row["source"] == "self-interaction"]
    assert len(conversations) == interaction["truncated_conversations"] >= 1
    assert len(conversations) + interaction["dropped_conversations"] == CONVERSATIONS
    assert manifest["rows"] + sum(manifest["rejected"].values()) == metrics["input_rows"]
    kept = 0
    for row in conversations:
        generated = [m["content"] for m in row["messages"][2:]]  # after the training system turn, opener
        assert row["messages"][-1]["role"] == "assistant", row["id"]  # ends on a training target
        assert len(generated) % 2 == 1 and plan.min_turns <= len(generated) < TURNS, row["id"]
        kept += len(generated)
        # the last turn was sent with a prompt that left room for its answer: within the limit
        opener = row["messages"][1]["content"]
        last = len(generated)
        prompt = project["count"]([view(project["system"], opener, generated[: last - 1], last % 2 == 1)])[0]
        assert prompt + MAX_NEW_TOKENS <= limit, row["id"]
    assert interaction["turns_kept"] == kept and interaction["turns_asked_total"] == CONVERSATIONS * TURNS
    # DVC's metrics file says so too
    summary = json.loads((root / f"metrics/{VARIANT}/introspect.json").read_text())
    assert summary["truncated_conversations"] == interaction["truncated_conversations"]
    assert (summary["turns_kept"], summary["turns_asked_total"]) == (kept, CONVERSATIONS * TURNS)
    assert summary["rows"] == manifest["rows"] and summary["rejected"] == manifest["rejected"]


def test_a_context_that_cannot_hold_the_shortest_conversation_stops_the_stage(
    project: dict[str, Any],
) -> None:
    root = project["root"]
    manifest = root / f"corpora/build/{VARIANT}/introspection.manifest.json"
    before = manifest.read_text() if manifest.is_file() else None
    small = root / "small.yaml"
    small.write_text(params(project["model"], project["limit"] - 1))
    result = charforge(root, "run", "introspect", "--variant", VARIANT, "--params", str(small))
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        "error: introspection: the shortest self-interaction conversation kept does not fit" in result.stderr
    )
    for key in (
        "models.student.max_model_len",
        "introspection.max_new_tokens",
        "introspection.min_exchanges",
    ):
        assert key in result.stderr, key
    assert "Traceback" not in result.stdout + result.stderr
    assert (manifest.read_text() if manifest.is_file() else None) == before  # nothing written
