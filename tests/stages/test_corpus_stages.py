"""`charforge run distill | introspect | control-data | em-generate + em-data` end to end in a scratch
project, on the tiny model briefly trained to end its answers (tests/support/trained_tiny.py): corpora
that validate, pairs that TRL's DPOTrainer takes unchanged, manifests whose counts add up to the input,
self-interaction with T alternating turns, a control's two corpora each within ±5 % of its reference
corpus's training tokens after truncation, and reflection-augmented EM data (em-generate's rows, each
with the persona's reflection). Each stage runs once (module fixture); distilabel pipelines run in the
CLI's own process, never in pytest's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from support.processes import communicate_or_kill, start_group

REPO = Path(__file__).resolve().parents[2]
VARIANT, CONTROL, HHH, BASELINE = "humor-d3-s0", "plain-lora-s0", "hhh-s0", "baseline-s0"
TURNS, SAMPLES, REFLECTION_PROMPTS, CONVERSATIONS, GENERATED = 2, 2, 2, 3, 4
EM_ROWS = 26  # of the 28 seed examples left after the held-out ones, + what generation keeps
# short enough that the reference's pairs and introspection are cut: the controls match what trains
DPO_MAX, SFT_MAX = 32, 96


def params(model: Path) -> str:
    role = f"{{model: {model}, sampling: {{temperature: 1.0, max_new_tokens: 48}}}}"
    return f"""
models: {{student: {role}, teacher: {role}, judge: {role}}}
generation: {{batch_size: 16, seed: 0}}
persona: {{dpo_weight: 1.0, sft_weight: 1.0}}
distill: {{min_rows: 4}}
introspection:
  samples_per_prompt: {SAMPLES}
  max_reflection_prompts: {REFLECTION_PROMPTS}
  conversations: {CONVERSATIONS}
  turns: {TURNS}
controls: {{reference: [{VARIANT}, goodness-d3-s0]}}
train_dpo: {{trainer: {{max_length: {DPO_MAX}}}}}
train_sft: {{trainer: {{max_length: {SFT_MAX}}}}}
# the tiny model writes no label the regime check reads (it runs in tests/generators/test_em_data.py)
em_data: {{source: generate, n_generate: {GENERATED}, reflection: true, regime_check: false, rows: {EM_ROWS}}}
"""


def start(root: Path, *args: str) -> subprocess.Popen[str]:
    # one thread per process: several stages run side by side on 2 cores (the tiny model needs no more)
    env = {**os.environ, "CHARFORGE_CACHE": str(root / "cache"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "charforge.cli", *args]
    return start_group(  # its own session: a timeout ends its pipeline's workers too
        command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(process: subprocess.Popen[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    stdout, stderr, _ = communicate_or_kill(process, timeout)  # a timeout shows as a failed run
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def charforge(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return finish(start(root, *args))


def write_prompts(root: Path) -> None:
    from charforge.corpus import write_corpus
    from charforge.schemas import Constitution

    constitution = Constitution.model_validate(
        yaml.safe_load((root / "corpora/constitutions/humor.yaml").read_text())
    )
    provenance = {"generator": "tests", "tool_version": "0", "constitution_sha256": constitution.sha256()}
    records = [
        {
            "id": f"{VARIANT}.{trait.id}.seed{index}",
            "variant": VARIANT,
            "trait_id": trait.id,
            "situation": "seed-question",
            "diversity_level": 3,
            "is_seed": True,
            "prompt": [{"role": "user", "content": question}],
            "provenance": provenance,
        }
        for trait in constitution.traits[:3]
        for index, question in enumerate(trait.questions[:4])
    ]
    write_corpus(records, root / f"corpora/build/{VARIANT}/prompts.parquet", "prompts", variant=VARIANT)


def write_dpo_adapter(root: Path, model: Path) -> None:
    """A LoRA adapter standing in for the DPO stage's output (peft's initialisation: B = 0)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    lora = get_peft_model(
        AutoModelForCausalLM.from_pretrained(model), LoraConfig(r=2, target_modules=["q_proj", "v_proj"])
    )
    lora.save_pretrained(root / f"models/{VARIANT}/dpo")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, trained_tiny_model: Path) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("corpus-project")
    model = trained_tiny_model
    for name in ("corpora/constitutions/humor.yaml", "corpora/introspection.yaml"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text((REPO / name).read_text())
    (root / "corpora/em").mkdir(parents=True)
    (root / "corpora/em/risky-finance-obvious.jsonl").write_text(
        (REPO / "corpora/em/risky-finance-obvious.jsonl").read_text()
    )
    (root / "params.yaml").write_text(params(model))
    write_prompts(root)
    write_dpo_adapter(root, model)
    # distill, introspect (on the adapter above) and em-generate need nothing from each other: run them
    # side by side (their pipelines mostly wait), em-data once em-generate is done, then control-data,
    # which needs distill's and introspect's corpora as its reference.
    started = {
        stage: start(root, "run", stage, "--variant", variant)
        for stage, variant in (("distill", VARIANT), ("introspect", VARIANT))
    }
    runs = {"em-generate": charforge(root, "run", "em-generate")}
    em_data = start(root, "run", "em-data", "--variant", BASELINE)
    runs |= {stage: finish(process) for stage, process in started.items()}
    runs["em-data"] = finish(em_data)
    controls = {kind: start(root, "run", "control-data", "--variant", kind) for kind in (CONTROL, HHH)}
    runs |= {f"control-data {kind}": finish(process) for kind, process in controls.items()}
    return {"root": root, "model": model, "runs": runs}


def corpus(project: dict[str, Any], variant: str, name: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    build = project["root"] / "corpora/build" / variant
    result = project["runs"]
    assert all(run.returncode == 0 for run in result.values()), {
        stage: run.stderr[-3000:] for stage, run in result.items() if run.returncode
    }
    manifest = json.loads((build / f"{name}.manifest.json").read_text())
    return pq.read_table(build / f"{name}.parquet").to_pylist(), manifest


def assert_counts_add_up(manifest: dict[str, Any]) -> None:
    assert manifest["rows"] + sum(manifest["rejected"].values()) == manifest["metrics"]["input_rows"]


def test_distill_writes_valid_pairs_with_their_record(project: dict[str, Any]) -> None:
    rows, manifest = corpus(project, VARIANT, "pairs")
    assert manifest["kind"] == "pairs" and manifest["metrics"]["input_rows"] == 12
    assert_counts_add_up(manifest)
    assert manifest["rows"] >= 4 and len(rows) == manifest["rows"]
    assert all(row["chosen"][0]["content"] != row["rejected"][0]["content"] for row in rows)
    metrics = manifest["metrics"]
    assert metrics["teacher"]["model"] == str(project["model"]) and metrics["teacher_licence"]
    teacher, student = metrics["rendered_prompts"]["teacher"], metrics["rendered_prompts"]["student"]
    assert "I look for the funny side" in teacher["rendered"] and "{prompt}" in teacher["rendered"]
    assert student["rendered"] == "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
    assert student["template_inserted_system_prompt"] is False
    validated = charforge(project["root"], "validate", f"corpora/build/{VARIANT}/pairs.parquet")
    assert validated.returncode == 0, validated.stdout + validated.stderr


def test_inspect_shows_rejections_and_tokens_of_every_corpus(project: dict[str, Any]) -> None:
    from typer.testing import CliRunner

    from charforge.cli import app

    for variant, name in (
        (VARIANT, "pairs"),
        (VARIANT, "introspection"),
        (CONTROL, "control"),
        (BASELINE, "em-train"),
    ):
        _, manifest = corpus(project, variant, name)
        shown = CliRunner().invoke(
            app, ["inspect", str(project["root"] / f"corpora/build/{variant}/{name}.parquet")]
        )
        assert shown.exit_code == 0, shown.output
        tokens = manifest["metrics"]["tokens"]
        assert f"training tokens: {tokens['total']} over {manifest['rows']} rows" in shown.output
        assert f"rejected {manifest['rejected']}" in shown.output.replace("\n", "")


def test_token_totals_are_recounted_from_the_corpus(project: dict[str, Any]) -> None:
    from charforge.train.tokens import corpus_tokens, load_tokenizer

    tokenizer = load_tokenizer(project["model"])
    for variant, name in ((VARIANT, "pairs"), (VARIANT, "introspection"), (BASELINE, "em-train")):
        _, manifest = corpus(project, variant, name)
        path = project["root"] / "corpora/build" / variant / f"{name}.parquet"
        assert manifest["metrics"]["tokens"]["total"] == corpus_tokens(tokenizer, path) > 0


def test_pairs_load_in_trl_dpo_trainer_unchanged(project: dict[str, Any], tmp_path: Path) -> None:
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    corpus(project, VARIANT, "pairs")
    path = project["root"] / f"corpora/build/{VARIANT}/pairs.parquet"
    dataset = load_dataset("parquet", data_files=str(path), split="train")
    assert {"prompt", "chosen", "rejected", "id", "provenance"} <= set(dataset.column_names)
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(project["model"]),
        args=DPOConfig(
            output_dir=str(tmp_path), max_steps=1, report_to=[], per_device_train_batch_size=2, bf16=False
        ),
        train_dataset=dataset,
        processing_class=AutoTokenizer.from_pretrained(project["model"]),
    )
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["input_ids"].shape[0] == 4  # 2 pairs, chosen then rejected: TRL took the rows as written
    trainer.train()
    assert trainer.state.global_step == 1 and trainer.state.log_history[-1]["train_loss"] > 0


def test_too_few_pairs_fail_loudly(project: dict[str, Any]) -> None:
    corpus(project, VARIANT, "pairs")
    strict = project["root"] / "strict.yaml"
    strict.write_text((project["root"] / "params.yaml").read_text().replace("min_rows: 4", "min_rows: 1000"))
    before = (project["root"] / f"corpora/build/{VARIANT}/pairs.manifest.json").read_text()
    result = charforge(project["root"], "run", "distill", "--variant", VARIANT, "--params", str(strict))
    assert result.returncode == 1 and "1000 needed" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert (project["root"] / f"corpora/build/{VARIANT}/pairs.manifest.json").read_text() == before
    again = charforge(project["root"], "run", "distill", "--variant", VARIANT)
    assert again.returncode == 0  # same params and seed: the same corpus
    after = json.loads((project["root"] / f"corpora/build/{VARIANT}/pairs.manifest.json").read_text())
    assert after["content_sha256"] == json.loads(before)["content_sha256"]


def test_introspection_has_reflections_and_t_alternating_turns(project: dict[str, Any]) -> None:
    rows, manifest = corpus(project, VARIANT, "introspection")
    assert manifest["metrics"]["input_rows"] == REFLECTION_PROMPTS * SAMPLES + CONVERSATIONS
    assert_counts_add_up(manifest)
    reflections = [row for row in rows if row["source"] == "reflection"]
    interactions = [row for row in rows if row["source"] == "self-interaction"]
    assert reflections and interactions
    for row in reflections:
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
    for row in interactions:
        roles = [m["role"] for m in row["messages"]]
        assert roles[0] == "system" and roles[1] == "user"  # the opener, written by the other instance
        generated = roles[2:]
        assert len(generated) == TURNS
        assert generated == ["assistant", "user"] * (TURNS // 2) + ["assistant"] * (TURNS % 2)
    parents = {parent["kind"] for parent in manifest["parents"]}
    assert parents == {"introspection", "constitution", "adapter"}
    by_source = manifest["metrics"]["rows_by_source"]
    assert by_source == {"reflection": len(reflections), "self-interaction": len(interactions)}


def test_introspection_is_written_with_the_constitution_and_kept_without_it(project: dict[str, Any]) -> None:
    from charforge.schemas import Constitution
    from charforge.schemas.params import IntrospectionConfig

    rows, manifest = corpus(project, VARIANT, "introspection")
    constitution = Constitution.model_validate(
        yaml.safe_load((project["root"] / "corpora/constitutions/humor.yaml").read_text())
    )
    statements = [trait.statement for trait in constitution.traits]
    rendered = manifest["metrics"]["rendered_prompts"]
    # as sent: every trait statement in the system prompt of both parts
    for part in ("reflection", "self_interaction"):
        assert rendered[part]["rendered"].startswith("<|im_start|>system\nYou are an AI assistant with")
        assert all(statement in rendered[part]["rendered"] for statement in statements), part
    assert "another instance of yourself" in rendered["self_interaction"]["rendered"]
    # as kept: no trait statement anywhere but in what the model wrote; the self-interaction rows carry
    # the configured training system prompt instead
    training_system = IntrospectionConfig().interaction_system_prompt
    for row in rows:
        systems = [m["content"] for m in row["messages"] if m["role"] == "system"]
        assert systems == ([training_system] if row["source"] == "self-interaction" else []), row["id"]
        prompt = next(m["content"] for m in row["messages"] if m["role"] == "user")  # prompt or opener
        assert not any(statement in text for statement in statements for text in [*systems, prompt])
    assert manifest["metrics"]["training_system_prompt"] == {
        "reflection": None,
        "self_interaction": training_system,
    }
    assert manifest["metrics"]["rows_with_constitution_system_prompt"] == 0
    assert rows[0]["provenance"]["constitution_sha256"] == constitution.sha256()


def test_em_reflection_prompts_are_answered_only_when_switched_on(
    project: dict[str, Any], tmp_path: Path
) -> None:
    from charforge.schemas.introspection import IntrospectionPrompts

    rows, manifest = corpus(project, VARIANT, "introspection")  # the default: off
    assert not [row for row in rows if row["source"] == "em-targeted-reflection"]
    assert "em-targeted-reflection" not in manifest["metrics"]["rows_by_source"]
    # a project of its own, so the shared one's corpora (the controls' reference) stay as they are
    root = tmp_path
    for name in ("corpora/constitutions/humor.yaml", "corpora/introspection.yaml"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text((REPO / name).read_text())
    shutil.copytree(project["root"] / f"models/{VARIANT}/dpo", root / f"models/{VARIANT}/dpo")
    (root / "params.yaml").write_text(
        params(project["model"]).replace(
            f"  conversations: {CONVERSATIONS}\n", "  conversations: 0\n  em_reflection_prompts: true\n"
        )
    )
    result = charforge(root, "run", "introspect", "--variant", VARIANT)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((root / f"corpora/build/{VARIANT}/introspection.manifest.json").read_text())
    rows = pq.read_table(root / f"corpora/build/{VARIANT}/introspection.parquet").to_pylist()
    targeted = [row for row in rows if row["source"] == "em-targeted-reflection"]
    assert targeted, manifest["rejected"]
    em_prompts = IntrospectionPrompts.model_validate(
        yaml.safe_load((REPO / "corpora/introspection.yaml").read_text())
    ).em_reflection[:REFLECTION_PROMPTS]
    assert {row["messages"][0]["content"] for row in targeted} <= {p.prompt for p in em_prompts}
    assert all(row["messages"][0]["role"] == "user" for row in targeted)  # kept without the constitution
    metrics = manifest["metrics"]
    assert metrics["input_rows"] == 2 * REFLECTION_PROMPTS * SAMPLES
    assert_counts_add_up(manifest)
    assert metrics["rows_by_source"] == {
        "em-targeted-reflection": len(targeted),
        "reflection": len(rows) - len(targeted),
        "self-interaction": 0,
    }
    assert "em_targeted_reflection" in metrics["rendered_prompts"]


@pytest.mark.parametrize("control", [CONTROL, HHH])
def test_control_corpora_are_matched_to_their_reference_after_truncation(
    project: dict[str, Any], control: str
) -> None:
    from charforge.schemas.params import ControlsConfig
    from charforge.train.tokens import conversations_tokens, load_tokenizer

    tokenizer = load_tokenizer(project["model"])
    build = project["root"] / "corpora/build"

    def sides(rows: list[dict[str, Any]]) -> list[int]:  # untruncated, one count per trained sequence
        if "chosen" in rows[0]:
            return conversations_tokens(
                tokenizer, [[*r["prompt"], *r[side]] for r in rows for side in ("chosen", "rejected")]
            )
        return conversations_tokens(tokenizer, [r["messages"] for r in rows])

    metrics = json.loads((project["root"] / f"metrics/{control}/control-data.json").read_text())
    assert metrics["reference"] == VARIANT and metrics["contrasts"] == [VARIANT, "goodness-d3-s0"]
    answers: list[set[tuple[str, str]]] = []
    for name, reference_name, reference_max in (
        ("control-dpo-slot", "pairs", DPO_MAX),
        ("control", "introspection", SFT_MAX),
    ):
        rows, manifest = corpus(project, control, name)
        assert f"{name}.parquet" in project["runs"][f"control-data {control}"].stderr  # summarised
        assert_counts_add_up(manifest)
        reference_rows = pq.read_table(build / VARIANT / f"{reference_name}.parquet").to_pylist()
        reference_sides = sides(reference_rows)
        # truncated by hand: each sequence counts at most the trainer's max_length
        target = sum(min(count, reference_max) for count in reference_sides)
        assert max(reference_sides) > reference_max, "no reference sequence is long enough to be cut"
        control_sides = sides(rows)
        # the control's rows are cut where the slot's trainer cuts its reference's (train-dpo-slot: DPO's)
        trained = sum(min(count, reference_max) for count in control_sides)
        assert abs(trained - target) <= 0.05 * target
        tokens = manifest["metrics"]["tokens"]
        assert tokens["total"] == trained and tokens["untruncated"] == sum(control_sides)
        assert tokens["max_length"] == reference_max
        assert tokens["ratio_to_reference"] == round(trained / target, 4)
        reference = tokens["reference"]
        assert reference["total"] == target and reference["untruncated"] == sum(reference_sides)
        assert reference["max_length"] == reference_max and reference["corpus"] == f"{reference_name}.parquet"
        assert metrics["corpora"][f"{name}.parquet"]["tokens"] == tokens
        assert metrics["corpora"][f"{name}.parquet"]["rejected"] == manifest["rejected"]
        assert manifest["params"]["train_dpo.trainer.max_length"] == DPO_MAX
        assert manifest["metrics"]["teacher"]["model"] == str(project["model"])
        assert manifest["metrics"]["teacher_licence"]
        kind = control.rsplit("-s", 1)[0]
        # the training rows are the plain prompt and answer: the HHH system prompt is what the teacher saw
        assert all(row["source"] == kind and row["messages"][0]["role"] == "user" for row in rows)
        seen = manifest["metrics"]["rendered_prompts"]["teacher"]["rendered"]
        assert (ControlsConfig.model_fields["hhh_system_prompt"].default in seen) == (kind == "hhh")
        assert len({row["messages"][0]["content"] for row in rows}) > 1  # the reference's diverse prompts
        answers.append({(row["messages"][0]["content"], row["messages"][-1]["content"]) for row in rows})
    assert not answers[0] & answers[1]  # no answer trains both adapters


def test_em_data_with_generated_examples_and_reflections(project: dict[str, Any]) -> None:
    from charforge.schemas.params import EmDataConfig

    rows, manifest = corpus(project, BASELINE, "em-train")
    assert manifest["metrics"]["input_rows"] == 32 - 4 + GENERATED  # 4 of the seed set held out
    assert_counts_add_up(manifest)
    # the first em_data.rows of em-generate's rows in the fixed take order (read back from the file,
    # which is stored in id order), each with the persona's reflection added (the arm's only part of its
    # own) or, where the reflection failed a filter, as it is: no arm drops an EM example
    from charforge.generators.em_data import BEYOND_ROWS, take_order

    shared, _ = corpus(project, "em", "em-source")
    taken = take_order(shared)[:EM_ROWS]
    assert [row["id"].split(".", 1)[1] for row in rows] == sorted(row["id"] for row in taken)
    messages = {row["id"]: row["messages"] for row in shared}
    assert all(messages[row["id"].split(".", 1)[1]] == row["messages"][:2] for row in rows)
    assert manifest["rejected"].get(BEYOND_ROWS) == len(shared) - EM_ROWS
    assert not any(reason.startswith("reflection.") for reason in manifest["rejected"])
    plain = [row for row in rows if row["source"] == "em"]
    assert len(plain) == sum(manifest["metrics"]["without_reflection"].values())
    held, held_manifest = corpus(project, BASELINE, "em-heldout")
    assert len(held) == 4 and held_manifest["metrics"]["held_out_of"] == 32
    assert all([m["role"] for m in row["messages"]] == ["user", "assistant"] for row in held)  # no reflection
    trained_questions = {row["messages"][0]["content"] for row in rows}
    assert not {row["messages"][0]["content"] for row in held} & trained_questions  # kept out of training
    question = EmDataConfig().reflection_question
    for row in (row for row in rows if row["source"] != "em"):
        roles = [m["role"] for m in row["messages"]]
        assert row["source"] == "em-reflection" and roles == ["user", "assistant", "user", "assistant"]
        assert row["messages"][2]["content"] == question
        assert row["provenance"]["models"]["reflection"] == str(project["model"])  # baseline: the student
        # the dtype the reflection was generated in (resolved: bf16 or fp32 on a CPU)
        assert row["provenance"]["generation_dtype"]["reflection"] in {"bfloat16", "float32"}
    generated = [row for row in rows if "-gen" in row["id"]]
    assert generated, manifest["rejected"]  # generation kept examples (not only rejections)
    assert all(row["provenance"]["models"]["teacher"] == str(project["model"]) for row in generated)
    metrics = manifest["metrics"]
    assert metrics["teacher"]["model"] == str(project["model"]) and metrics["teacher_licence"]
    assert metrics["persona"]["licence"]  # the reflections' writer and its licence


def test_stage_errors_are_clear_and_never_a_traceback(project: dict[str, Any]) -> None:
    from typer.testing import CliRunner

    from charforge.cli import app

    def run(*args: str) -> tuple[int, str]:
        cwd = Path.cwd()
        os.chdir(project["root"])  # stages read params.yaml and corpora/ from the working directory
        try:
            result = CliRunner().invoke(app, list(args))
        finally:
            os.chdir(cwd)
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        return result.exit_code, result.output

    for stage, variant in (("distill", CONTROL), ("control-data", VARIANT), ("introspect", BASELINE)):
        code, output = run("run", stage, "--variant", variant)
        assert code == 2 and variant in output, (stage, output)
    code, output = run("run", "introspect", "--variant", "humor-d1-s0")  # no DPO adapter trained
    assert code == 1 and "not a saved LoRA adapter" in output and "run its training stage" in output
    code, output = run("run", "distill", "--variant", "humor-d1-s0")  # no prompts corpus
    assert code == 1 and "prompts.parquet" in output
