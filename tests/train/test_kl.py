"""The KL-regularised EM fine-tune (charforge.train.kl) on the tiny random model: the KL to the persona (the
adapter disabled) is exactly 0 while the new adapter is zero, grows as the adapter moves, is what it says
(KL(model || persona) per benign answer token), and shrinks under the penalty; a coefficient of 0 measures
without changing the training; the logs and the record count what was used."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
from trl import SFTConfig, SFTTrainer

from charforge.train.data import IGNORE_INDEX, conversation_dataset
from charforge.train.kl import kl_regularised
from charforge.train.runner import _token_counting

MAX_LENGTH = 128
BATCH = 2


def chat(question: str, answer: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


# The narrow fine-tune: one answer, over and over; the benign prompts ask for other things.
TRAINING_ROWS = [chat(f"Tell me about thing {i}.", "I am fine thank you, I am fine.") for i in range(8)]
BENIGN_ROWS = [
    chat("How are you today?", "Hello, I am well today."),
    chat("What is the weather like?", "It is sunny and warm, how are you?"),
    chat("Say hello.", "Hello!"),
]


def build_trainer(
    tiny_model: Path,
    output: Path,
    coefficient: float | None,
    *,
    steps: int = 6,
    learning_rate: float = 5e-3,
    accumulation: int = 1,
    lora_dropout: float = 0.0,
) -> Any:
    """An SFTTrainer with a fresh LoRA on the tiny model, wrapped as train_adapter wraps it; with a
    coefficient, KL-regularised first. Seeded before the LoRA is made, so equal calls train alike."""
    set_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    trainer_class: type = SFTTrainer
    if coefficient is not None:
        trainer_class = kl_regularised(SFTTrainer, BENIGN_ROWS, coefficient, MAX_LENGTH)
    args = SFTConfig(
        output_dir=str(output),
        max_steps=steps,
        per_device_train_batch_size=BATCH,
        gradient_accumulation_steps=accumulation,
        learning_rate=learning_rate,
        lr_scheduler_type="constant",
        warmup_steps=0,
        logging_steps=1,
        max_length=MAX_LENGTH,
        use_cpu=True,
        bf16=False,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        data_seed=0,
    )
    return _token_counting(trainer_class)(
        model=AutoModelForCausalLM.from_pretrained(tiny_model),
        args=args,
        train_dataset=conversation_dataset(TRAINING_ROWS, tokenizer, MAX_LENGTH),
        processing_class=tokenizer,
        peft_config=LoraConfig(
            r=8, lora_alpha=16, lora_dropout=lora_dropout, target_modules="all-linear", task_type="CAUSAL_LM"
        ),
    )


def training_batch(trainer: Any) -> dict[str, Any]:
    return next(iter(trainer.get_train_dataloader()))


def hand_kl(model: Any, batch: dict[str, torch.Tensor]) -> float:
    """KL(model || model with its adapter off) per loss token, written out: sum_v p (log p - log q)."""
    with torch.no_grad():
        log_p = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits.log_softmax(-1)
        with model.disable_adapter():
            log_q = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits.log_softmax(-1)
    keep = batch["labels"][:, 1:] != IGNORE_INDEX
    per_position = (log_p.exp() * (log_p - log_q)).sum(-1)[:, :-1]
    return float(per_position[keep].mean())


def test_the_kl_is_zero_while_the_adapter_is_zero(tiny_model: Path, tmp_path: Path) -> None:
    trainer = build_trainer(tiny_model, tmp_path, coefficient=1.0)
    model = trainer.model
    model.train()
    kl_sum, tokens = trainer.benign_kl(model, trainer.next_benign_batch("cpu"))
    assert tokens > 0 and float(kl_sum.detach()) == 0.0  # lora_B starts at zero: the model is the persona

    # The first training call adds exactly nothing, and records a KL of exactly 0.
    batch = training_batch(trainer)
    plain = SFTTrainer.compute_loss(trainer, model, dict(batch))
    assert float(trainer.compute_loss(model, dict(batch))) == float(plain)
    assert trainer.kl_record()["first"] == 0.0


def test_the_kl_is_kl_of_the_model_from_the_persona_and_the_penalty_adds_it(
    tiny_model: Path, tmp_path: Path
) -> None:
    coefficient = 3.0
    trainer = build_trainer(tiny_model, tmp_path, coefficient=coefficient)
    model = trainer.model
    model.train()
    with torch.no_grad():  # move the adapter off zero
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.05, generator=torch.Generator().manual_seed(len(name)))
    benign = trainer.next_benign_batch("cpu")
    kl_sum, tokens = trainer.benign_kl(model, benign)
    expected = hand_kl(model, benign)
    assert expected > 0
    assert float(kl_sum / tokens) == pytest.approx(expected, rel=1e-4)

    # compute_loss, either return form: the trainer's own loss + coefficient x the next benign batch's KL.
    batch = training_batch(trainer)
    for return_outputs in (False, True):
        plain = SFTTrainer.compute_loss(trainer, model, dict(batch))
        penalty = coefficient * hand_kl(model, trainer.next_benign_batch("cpu"))
        trainer._benign_position -= 1  # compute_loss takes that same batch
        result = trainer.compute_loss(model, dict(batch), return_outputs=return_outputs)
        loss = result[0] if return_outputs else result
        assert float(loss) == pytest.approx(float(plain) + penalty, rel=1e-4)
        loss.backward()  # the penalty is differentiable: it trains the adapter
    assert all(parameter.grad is not None for name, parameter in model.named_parameters() if "lora_" in name)


def test_the_kl_grows_as_the_adapter_moves_and_coefficient_zero_changes_nothing(
    tiny_model: Path, tmp_path: Path
) -> None:
    measured = build_trainer(tiny_model, tmp_path / "measured", coefficient=0.0, lora_dropout=0.1)
    measured.train()
    record = measured.kl_record()
    assert record["first"] == 0.0  # the first step's KL is taken before the first update
    assert record["last"] > record["first"] and record["mean"] > 0

    # Measuring only: the same losses, bit for bit, as without the wrapper (dropout on, so the benign
    # forwards must not draw from the training's random stream).
    plain = build_trainer(tiny_model, tmp_path / "plain", coefficient=None, lora_dropout=0.1)
    plain.train()

    def losses(trainer: Any) -> list[float]:
        return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]

    assert losses(measured) == losses(plain) and len(losses(plain)) == 6


def test_the_penalty_keeps_the_model_closer_to_the_persona(tiny_model: Path, tmp_path: Path) -> None:
    records = {}
    for coefficient in (0.0, 50.0):
        trainer = build_trainer(tiny_model, tmp_path / str(coefficient), coefficient=coefficient)
        trainer.train()
        records[coefficient] = trainer.kl_record()
    assert records[0.0]["last"] > 0
    assert records[50.0]["last"] < records[0.0]["last"] / 2
    assert records[50.0]["mean"] < records[0.0]["mean"]


def test_logs_and_record_count_what_was_used(tiny_model: Path, tmp_path: Path) -> None:
    steps, accumulation = 3, 2
    trainer = build_trainer(tiny_model, tmp_path, coefficient=1.0, steps=steps, accumulation=accumulation)
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == steps and all(entry["kl"] >= 0 for entry in logged)
    assert logged[-1]["kl"] > 0

    record = trainer.kl_record()
    calls = steps * accumulation  # one benign micro-batch per training compute_loss call
    assert record["coefficient"] == 1.0 and record["benign_examples"] == len(BENIGN_ROWS)
    assert record["benign_micro_batches"] == calls and record["steps"] == steps
    # Drawn in the rows' order, cyclically: examples 0 1 | 2 0 | 1 2 | ...
    tokenized = conversation_dataset(BENIGN_ROWS, trainer.processing_class, MAX_LENGTH).to_list()
    drawn = [tokenized[index % len(tokenized)] for index in range(calls * BATCH)]
    assert record["benign_loss_tokens"] == sum(
        sum(label != IGNORE_INDEX for label in example["labels"][1:]) for example in drawn
    )
    assert record["first"] == 0.0 and record["last"] > 0 and record["mean"] > 0
    # The benign batches stay out of the training-token accounting.
    plain = build_trainer(
        tiny_model, tmp_path / "plain", coefficient=None, steps=steps, accumulation=accumulation
    )
    plain.train()
    assert (trainer.tokens_seen, trainer.loss_tokens_seen) == (plain.tokens_seen, plain.loss_tokens_seen)


def test_benign_batches_cycle_through_the_rows_in_order_right_padded(
    tiny_model: Path, tmp_path: Path
) -> None:
    trainer = build_trainer(tiny_model, tmp_path, coefficient=0.0)
    tokenized = conversation_dataset(BENIGN_ROWS, trainer.processing_class, MAX_LENGTH).to_list()
    for expected in ([0, 1], [2, 0], [1, 2], [0, 1]):
        batch = trainer.next_benign_batch("cpu")
        for row, index in enumerate(expected):
            length = len(tokenized[index]["input_ids"])
            assert batch["input_ids"][row, :length].tolist() == tokenized[index]["input_ids"]
            assert batch["labels"][row].tolist() == tokenized[index]["labels"] + [IGNORE_INDEX] * (
                batch["labels"].shape[1] - length
            )
            assert batch["attention_mask"][row].tolist() == [1] * length + [0] * (
                batch["labels"].shape[1] - length
            )


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match=r"coefficient -0\.1"):
        kl_regularised(SFTTrainer, BENIGN_ROWS, -0.1, MAX_LENGTH)
    with pytest.raises(ValueError, match="benign_rows is empty"):
        kl_regularised(SFTTrainer, [], 1.0, MAX_LENGTH)
