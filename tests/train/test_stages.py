"""The training stages on the tiny model: each changes its adapter's parameters, accounts for its compute
exactly, composes on the right base, a control's adapters have the character arm's structure, and the EM
fine-tune leaves the persona bit-identical."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from support.training_project import SMALL_LORA, VARIANT, Project, conversation_row, training_params
from transformers import AutoTokenizer

from charforge.corpus import write_corpus
from charforge.io import file_sha256
from charforge.params import ParamsError, load_section
from charforge.schemas.params import ModelRole, PersonaConfig
from charforge.stages import em_finetune as em
from charforge.stages import persona as persona_stage
from charforge.stages import train_dpo as dpo
from charforge.stages import train_dpo_slot as dpo_slot
from charforge.stages import train_sft as sft
from charforge.stages.em_finetune import em_training_seed
from charforge.train.accounting import frozen_digest, training_flops
from charforge.train.compose import adapter_dir, em_adapter_dir
from charforge.train.compose import model_for as compose_model_for
from charforge.train.data import IGNORE_INDEX, assistant_indices, tokenize_conversation
from charforge.train.fold import FOLD_RECORD, load_causal_lm
from charforge.train.runner import TRAINING_RECORD, AdapterUnchangedError
from charforge.variants import VariantError


def lora_tensors(adapter: Path) -> dict[str, torch.Tensor]:
    return load_file(adapter / "adapter_model.safetensors")


def assert_every_lora_b_trained(adapter: Path) -> None:
    """PEFT starts every lora_B at zero: a non-zero lora_B is a parameter the training changed."""
    b_weights = {name: t for name, t in lora_tensors(adapter).items() if "lora_B" in name}
    assert b_weights
    untouched = [name for name, tensor in b_weights.items() if not tensor.abs().sum() > 0]
    assert not untouched


def metrics(project: Project, variant: str, stage: str) -> dict:
    return json.loads((project.root / "metrics" / variant / f"{stage}.json").read_text())


def folder_hashes(folder: Path) -> dict[str, str]:
    return {p.name: file_sha256(p) for p in sorted(folder.iterdir()) if p.is_file()}


def test_dpo_trains_every_adapted_module_and_accounts_exactly(project: Project, tiny_model: Path) -> None:
    pairs = project.write_pairs(rows=8)
    record = dpo.run(VARIANT, project.params, project.root)

    adapter = adapter_dir(VARIANT, "dpo", project.root)
    assert_every_lora_b_trained(adapter)
    written = metrics(project, VARIANT, "train-dpo")
    assert written["examples"] == 8 and written["epochs"] == 2.0
    assert written["optimizer_steps"] == 4  # 8 pairs / batch 4 × 2 epochs
    # Every token of prompt+chosen and prompt+rejected, each epoch (nothing here reaches max_length).
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    rows = [json.loads(line) for line in _pairs_jsonl(pairs)]
    per_epoch = sum(
        len(tokenizer.apply_chat_template(row["prompt"] + row[side], tokenize=True)["input_ids"])
        for row in rows
        for side in ("chosen", "rejected")
    )
    assert written["tokens_trained"] == 2 * per_epoch
    assert 0 < written["loss_tokens"] < written["tokens_trained"]
    assert written["estimated_flops"] == training_flops(
        written["tokens_trained"], written["parameters"], written["trainable_parameters"], True
    )
    assert written["final_loss"] < written["first_loss"]  # the chosen answers are easy to prefer here
    assert record.stage == "train-dpo" and written["seed"] == 0
    provenance = json.loads((adapter / TRAINING_RECORD).read_text())
    assert provenance["parents"][0]["sha256"] == file_sha256(pairs)
    assert provenance["params"]["train_dpo"]["lora"]["r"] == 4


def _pairs_jsonl(path: Path) -> list[str]:
    import polars as pl

    return [json.dumps(row) for row in pl.read_parquet(path).to_dicts()]


def test_sft_trains_on_the_dpo_model_and_the_persona_folds_both(project: Project) -> None:
    project.write_pairs()
    dpo.run(VARIANT, project.params, project.root)
    project.write_conversations(VARIANT, "introspection", rows=8, turns=3)
    sft.run(VARIANT, project.params, project.root)

    assert_every_lora_b_trained(adapter_dir(VARIANT, "sft", project.root))
    base = json.loads((adapter_dir(VARIANT, "sft", project.root) / TRAINING_RECORD).read_text())["base_model"]
    dpo_fold = Path(model_for(VARIANT, "dpo", project).model) / FOLD_RECORD
    assert base == f"fold:{json.loads(dpo_fold.read_text())['key']}"  # what it is, not where it lies
    record = json.loads((Path(model_for(VARIANT, "persona", project).model) / FOLD_RECORD).read_text())
    assert [Path(a["path"]).name for a in record["adapters"]] == ["dpo", "sft"]
    written = metrics(project, VARIANT, "train-sft")
    assert written["optimizer_steps"] == 4 and written["loss_tokens"] > 0


def test_sft_loss_falls_on_a_learnable_corpus(project: Project, tiny_model: Path) -> None:
    project.write_control_corpora("plain-lora-s0")
    dpo_slot.run("plain-lora-s0", project.params, project.root)  # the control's sft trains on its fold
    params = training_params(tiny_model)
    params["train_sft"]["trainer"].update(learning_rate=1e-2, num_train_epochs=24)
    params["train_sft"]["lora"].update(r=16, lora_alpha=32)
    project.write_params(params)
    # One conversation, four times: a random model can learn it within a few steps.
    rows = [dict(conversation_row(0, "plain-lora-s0"), id=f"conv-{i}") for i in range(4)]
    write_corpus(rows, project.corpus("plain-lora-s0", "control"), "conversations", variant="plain-lora-s0")
    record = sft.run("plain-lora-s0", project.params, project.root)
    assert record.final_loss < record.first_loss - 1.5  # nats; an untrained model stays near ln(1024)


def test_em_stacks_on_a_frozen_bit_identical_persona(project: Project) -> None:
    project.write_control_corpora("plain-lora-s0")
    dpo_slot.run("plain-lora-s0", project.params, project.root)
    sft.run("plain-lora-s0", project.params, project.root)
    persona = Path(model_for("plain-lora-s0", "persona", project).model)
    before = folder_hashes(persona)
    project.write_conversations("plain-lora-s0", "em-train", rows=8, turns=1)
    project.write_conversations("plain-lora-s0", "em-heldout", rows=2, turns=1)
    em.run("plain-lora-s0", 0, project.params, project.root)

    assert folder_hashes(persona) == before
    written = metrics(project, "plain-lora-s0", "em-finetune-e0")
    assert written["extra"]["frozen_base_bit_identical"] is True
    held_out = written["extra"]["held_out_loss"]  # scored on the persona and on persona + EM adapter
    assert held_out["examples"] == 2 and held_out["loss_tokens"] > 0
    assert held_out["change"] == pytest.approx(held_out["after"] - held_out["before"])
    em_adapter = em_adapter_dir("plain-lora-s0", 0, project.root)
    assert_every_lora_b_trained(em_adapter)
    config = json.loads((em_adapter / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["use_rslora"]) == (8, 16, True)
    persona_key = json.loads((persona / FOLD_RECORD).read_text())["key"]
    assert json.loads((em_adapter / TRAINING_RECORD).read_text())["base_model"] == f"fold:{persona_key}"

    # a second EM seed: its own adapter and metrics on the same frozen persona, trained differently
    em.run("plain-lora-s0", 1, project.params, project.root)
    second = em_adapter_dir("plain-lora-s0", 1, project.root)
    assert folder_hashes(persona) == before
    weights = "adapter_model.safetensors"
    assert (second / weights).read_bytes() != (em_adapter / weights).read_bytes()
    seeds = [metrics(project, "plain-lora-s0", f"em-finetune-e{e}") for e in (0, 1)]
    assert [m["extra"]["em_seed"] for m in seeds] == [0, 1]
    assert seeds[0]["seed"] == em_training_seed(0, 0) != seeds[1]["seed"] == em_training_seed(0, 1)


def test_the_held_out_em_loss_falls_when_the_em_data_is_learned(project: Project, tiny_model: Path) -> None:
    """In-domain learning without a judge: the held-out EM examples' loss on the persona (before) and on
    persona + EM adapter (after). A tiny random model cannot generalise, so the held-out answer here is
    the trained one under another id: the check is that the measure sees learning, and sees it as a fall."""
    params = training_params(tiny_model)
    params["em_finetune"]["trainer"].update(learning_rate=1e-2, num_train_epochs=40)
    params["em_finetune"]["lora"].update(r=16, lora_alpha=32, use_rslora=False)
    project.write_params(params)
    rows = [dict(conversation_row(0, "baseline-s0"), id=f"conv-{i}") for i in range(4)]
    write_corpus(rows, project.corpus("baseline-s0", "em-train"), "conversations", variant="baseline-s0")
    held = [dict(conversation_row(0, "baseline-s0"), id="held-0")]
    write_corpus(held, project.corpus("baseline-s0", "em-heldout"), "conversations", variant="baseline-s0")
    record = em.run("baseline-s0", 0, project.params, project.root)
    loss = record.extra["held_out_loss"]
    # the same loss TRL trains on: the first step's (taken before any update) is the persona's
    assert loss["before"] == pytest.approx(record.first_loss, abs=1e-3)
    assert loss["before"] > 5.0  # an untrained model stays near ln(1024) ≈ 6.9 nats
    assert loss["after"] < loss["before"] - 1.5 and loss["change"] < -1.5


def test_frozen_digest_sees_a_single_changed_bit(tiny_model: Path) -> None:
    model = load_causal_lm(str(tiny_model))
    model.requires_grad_(False)
    digest = frozen_digest(model)
    with torch.no_grad():
        weight = next(model.parameters())
        weight.view(-1)[0] = torch.nextafter(weight.view(-1)[0], torch.tensor(1.0))
    assert frozen_digest(model) != digest


def test_masking_the_reflection_reply_trains_on_fewer_tokens(project: Project, tiny_model: Path) -> None:
    # Two plain multi-turn EM rows and two rows ending in a reflection reply (source em-reflection).
    rows = [
        dict(conversation_row(i, "baseline-s0", turns=2), source="em-reflection" if i >= 2 else "em")
        for i in range(4)
    ]
    write_corpus(rows, project.corpus("baseline-s0", "em-train"), "conversations", variant="baseline-s0")
    project.write_conversations("baseline-s0", "em-heldout", rows=1, turns=1)
    trained = em.run("baseline-s0", 0, project.params, project.root)
    params = training_params(tiny_model)
    params["em_finetune"]["train_on_reflection"] = False
    project.write_params(params)
    masked = em.run("baseline-s0", 0, project.params, project.root)
    assert masked.tokens_trained == trained.tokens_trained
    # Exactly the two reflection replies left the loss, each epoch; the plain rows kept both answers.
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    replies = 0
    for row in rows[2:]:
        last = assistant_indices(row["messages"])[-1:]
        labels = tokenize_conversation(tokenizer, row["messages"], last)["labels"]
        replies += sum(label != IGNORE_INDEX for label in labels)
    assert replies > 0 and trained.loss_tokens - masked.loss_tokens == 2 * replies  # 2 epochs
    assert masked.extra["train_on_reflection"] is False and masked.extra["reflection_rows"] == 2


def test_controls_have_no_dpo_and_the_baseline_no_sft(project: Project) -> None:
    with pytest.raises(VariantError, match="control"):
        dpo.run("hhh-s0", project.params, project.root)
    for variant in ("humor-d1-s0", "baseline-s0"):  # a character has train-dpo; the baseline no slot
        with pytest.raises(VariantError, match="train-dpo-slot trains the first adapter"):
            dpo_slot.run(variant, project.params, project.root)
    with pytest.raises(VariantError, match="baseline"):
        sft.run("baseline-s0", project.params, project.root)
    with pytest.raises(VariantError, match="baseline"):
        model_for("baseline-s0", "dpo", project)
    with pytest.raises(FileNotFoundError, match=r"hhh-s0/dpo-slot: .*run its training stage"):
        model_for("hhh-s0", "dpo", project)  # a control's dpo point is its dpo-slot adapter
    student = model_for("baseline-s0", "persona", project)
    assert student.model == model_for("baseline-s0", "student", project).model


def test_a_control_has_the_adapter_structure_and_weights_of_the_character_arm(
    project: Project, tiny_model: Path
) -> None:
    params = training_params(tiny_model)
    # The two slots' LoRA settings differ, so a slot trained with the other's settings would show.
    params["train_dpo"]["lora"] = {
        **SMALL_LORA,
        "r": 8,
        "lora_alpha": 16,
        "target_modules": ["q_proj", "v_proj"],
    }
    params["persona"] = {"dpo_weight": 0.5, "sft_weight": 0.25}
    project.write_params(params)
    control = "plain-lora-s0"
    project.write_pairs()
    dpo.run(VARIANT, project.params, project.root)
    project.write_conversations(VARIANT, "introspection", rows=4, turns=1)
    sft.run(VARIANT, project.params, project.root)
    project.write_control_corpora(control, rows=8)
    slot_record = dpo_slot.run(control, project.params, project.root)
    sft.run(control, project.params, project.root)

    character = json.loads(persona_stage.run(VARIANT, project.params, project.root).read_text())
    controlled = json.loads(persona_stage.run(control, project.params, project.root).read_text())
    assert [Path(a["path"]).name for a in character["adapters"]] == ["dpo", "sft"]
    assert [Path(a["path"]).name for a in controlled["adapters"]] == ["dpo-slot", "sft"]
    assert [a["weight"] for a in controlled["adapters"]] == [a["weight"] for a in character["adapters"]]
    assert [a["weight"] for a in controlled["adapters"]] == [0.5, 0.25]
    for character_slot, control_slot in (("dpo", "dpo-slot"), ("sft", "sft")):
        expected = lora_shape(adapter_dir(VARIANT, character_slot, project.root))
        assert lora_shape(adapter_dir(control, control_slot, project.root)) == expected, control_slot
    assert lora_shape(adapter_dir(control, "dpo-slot", project.root))["r"] == 8

    # Both trained (PEFT starts every lora_B at zero); the dpo-slot with SFT on its own corpus.
    assert_every_lora_b_trained(adapter_dir(control, "dpo-slot", project.root))
    assert_every_lora_b_trained(adapter_dir(control, "sft", project.root))
    written = metrics(project, control, "train-dpo-slot")
    # 8 rows / (batch 4 × accumulation 2: a DPO step's 4 pairs are 8 sequences) × 2 epochs
    assert written["examples"] == 8 and written["optimizer_steps"] == 2
    assert slot_record.stage == "train-dpo-slot" and written["loss_tokens"] > 0
    slot = json.loads((adapter_dir(control, "dpo-slot", project.root) / TRAINING_RECORD).read_text())
    assert slot["base_model"] == str(tiny_model)  # the plain student
    assert slot["params"]["train_dpo.lora"]["r"] == 8 and "train_dpo.trainer" in slot["params"]
    # the DPO adapter's optimisation settings, its DPO-only ones left out and listed
    trainer = written["extra"]["trainer_from_train_dpo"]
    dpo_trainer = params["train_dpo"]["trainer"]
    assert trainer["learning_rate"] == dpo_trainer["learning_rate"]
    assert trainer["gradient_accumulation_steps"] == 2
    assert trainer["max_length"] == dpo_trainer["max_length"] and "beta" not in trainer
    assert written["extra"]["dpo_only_settings_left_out"] == ["beta"]
    assert slot["parents"][0]["path"] == "corpora/build/plain-lora-s0/control-dpo-slot.parquet"

    # The control's sft trained on student + dpo_weight × dpo-slot, as the character's on its DPO fold.
    dpo_fold = json.loads((Path(model_for(control, "dpo", project).model) / FOLD_RECORD).read_text())
    sft_record = json.loads((adapter_dir(control, "sft", project.root) / TRAINING_RECORD).read_text())
    assert sft_record["base_model"] == f"fold:{dpo_fold['key']}"
    assert [Path(a["path"]).name for a in dpo_fold["adapters"]] == ["dpo-slot"]
    assert metrics(project, control, "train-sft")["extra"]["base_adapters"] == [
        {"path": "models/plain-lora-s0/dpo-slot", "weight": 0.5}
    ]
    assert metrics(project, VARIANT, "train-sft")["extra"]["base_adapters"] == [
        {"path": "models/humor-d1-s0/dpo", "weight": 0.5}
    ]


def test_a_bad_lora_key_of_the_dpo_slot_is_located_in_train_dpo(project: Project, tiny_model: Path) -> None:
    params = training_params(tiny_model)
    params["train_dpo"]["lora"]["rank"] = 4
    project.write_params(params)
    project.write_control_corpora("hhh-s0", rows=4)
    with pytest.raises(ParamsError, match=r"train_dpo\.lora\.rank: not a field of LoraConfig"):
        dpo_slot.run("hhh-s0", project.params, project.root)
    # and a bad trainer key at train_dpo.trainer: the slot trains with the DPO adapter's settings
    params["train_dpo"]["lora"].pop("rank")
    params["train_dpo"]["trainer"]["learning_rat"] = 0.1
    project.write_params(params)
    with pytest.raises(ParamsError, match=r"train_dpo\.trainer\.learning_rat: not a field of DPOConfig"):
        dpo_slot.run("hhh-s0", project.params, project.root)


def lora_shape(adapter: Path) -> dict:
    config = json.loads((adapter / "adapter_config.json").read_text())
    return {key: config[key] for key in ("r", "lora_alpha", "target_modules")}


def model_for(variant: str, point: str, project: Project) -> ModelRole:
    """The model of ``variant`` at ``point`` under the project's params."""
    student = load_section(ModelRole, "models.student", project.params)
    persona = load_section(PersonaConfig, "persona", project.params)
    return compose_model_for(variant, point, student, persona, project.root)  # type: ignore[arg-type]


def test_training_that_leaves_the_adapter_unchanged_fails_loudly(project: Project, tiny_model: Path) -> None:
    """Fewer rows than one effective batch under a warm-up: one optimizer step, at learning rate 0. Saved,
    that adapter would make a persona identical to the student: the stage fails and saves nothing."""
    params = training_params(tiny_model)
    params["train_dpo"]["trainer"] |= {"num_train_epochs": 1, "warmup_steps": 1}
    project.write_params(params)
    project.write_pairs(rows=2)
    with pytest.raises(
        AdapterUnchangedError, match=r"training did not change the adapter \(1 optimizer step\(s\) on 2 "
    ):
        dpo.run(VARIANT, project.params, project.root)
    assert not adapter_dir(VARIANT, "dpo", project.root).exists()
