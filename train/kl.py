"""A KL-regularised EM fine-tune: the trainer's loss plus a penalty that keeps the model close to the
persona on benign prompts (the ``kl`` defence of charforge issue 24; Kaczér et al., arXiv 2508.06249).

The EM fine-tune trains a new LoRA on the frozen, folded persona, so the model before the fine-tune
is exactly the same PEFT model with its adapter disabled: the reference distribution costs one extra
forward pass under ``torch.no_grad`` and no second model in memory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from charforge.train.data import IGNORE_INDEX

if TYPE_CHECKING:
    import torch


def kl_regularised(
    trainer_class: type,
    benign_rows: Sequence[Mapping[str, Any]],
    coefficient: float,
    max_length: int | None,
) -> type:
    """``trainer_class`` (TRL's ``SFTTrainer`` in practice) whose training loss is its own loss plus
    ``coefficient`` x the KL divergence of the model from the persona on benign conversations.

    Reads:
        - ``benign_rows``: chat rows (``{"messages": [...]}``), tokenized on first use with the trainer's
          own tokenizer (``processing_class``) by ``charforge.train.data.conversation_dataset``, truncated
          to ``max_length``: the loss tokens are the assistant answers', as in the training data.
        - The model the trainer trains: a PEFT model whose base is the persona. With its adapter disabled
          it *is* the model before the fine-tune, so that is the reference.

    Adds, on every ``compute_loss`` call in training mode (never in evaluation):
        - The next ``per_device_train_batch_size`` benign examples, in a fixed cyclic order (the rows'
          order: the same every run; with several processes each takes its own interleaved share),
          right-padded with an attention mask.
        - KL = the mean over the benign loss tokens (labels not -100) of
          KL(p_model || p_reference) = sum over the vocabulary of p_model (log p_model - log p_reference),
          the fine-tuned model's distribution first: the usual RLHF convention (TRL's ``beta`` x KL to
          the reference). p_reference is computed with the adapter disabled, under ``torch.no_grad``.
        - ``loss + coefficient x KL``, the KL weighted under gradient accumulation as the trainer weighs
          its own loss. ``coefficient`` 0 still measures the KL but leaves the loss untouched (the
          forward runs without gradients); the benign forwards run on a forked random-number stream, so
          dropout in them leaves the training's own random draws as they were.
        - ``kl`` in the trainer's logs (``state.log_history``), and ``kl_record()``: the coefficient, the
          benign examples and micro-batches used, the loss tokens scored, and the KL of the first and
          last optimizer step and its mean over the steps.

    Composes with other ``compute_loss`` wrappers (``charforge.train.runner._token_counting``): the
    benign batch never reaches the training inputs, so token accounting counts the training data only.
    """
    if coefficient < 0:
        raise ValueError(f"KL coefficient {coefficient}: must be 0 (measure only) or more")
    if not benign_rows:
        raise ValueError("benign_rows is empty: the KL penalty needs benign conversations to score")
    rows = list(benign_rows)

    class KLRegularised(trainer_class):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._benign: list[dict[str, list[int]]] | None = None
            self._benign_position = 0  # how many benign micro-batches this process has drawn
            self._benign_tokens = 0  # loss tokens scored, summed over processes
            self._kl_pending: list[float] = [0.0, 0.0]  # KL sum and tokens since the last log
            self._kl_steps: dict[int, list[float]] = {}  # optimizer step -> [KL sum, tokens]

        def compute_loss(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            result = super().compute_loss(model, inputs, *args, **kwargs)
            if not model.training:
                return result
            import torch

            batch = self.next_benign_batch(inputs["input_ids"].device)
            with torch.set_grad_enabled(coefficient > 0 and torch.is_grad_enabled()):
                kl_sum, tokens = self.benign_kl(model, batch)
            mean_kl = kl_sum / tokens.clamp(min=1)
            self._record_kl(kl_sum.detach(), tokens)
            if coefficient == 0:
                return result
            num_items_in_batch = kwargs.get("num_items_in_batch", args[1] if len(args) > 1 else None)
            penalty = coefficient * mean_kl / self._accumulation_divisor(num_items_in_batch)
            if isinstance(result, tuple):
                return (result[0] + penalty, *result[1:])
            return result + penalty

        def next_benign_batch(self, device: torch.device | str) -> dict[str, torch.Tensor]:
            """The next ``per_device_train_batch_size`` benign examples, right-padded, on ``device``."""
            import torch
            from torch.nn.utils.rnn import pad_sequence

            from charforge.train.data import conversation_dataset

            if self._benign is None:
                self._benign = conversation_dataset(rows, self.processing_class, max_length).to_list()
            size = self.args.per_device_train_batch_size
            processes, index = self.accelerator.num_processes, self.accelerator.process_index
            start = (self._benign_position * processes + index) * size
            examples = [self._benign[(start + offset) % len(self._benign)] for offset in range(size)]
            self._benign_position += 1

            def padded(key: str, value: int) -> torch.Tensor:
                tensors = [torch.tensor(example[key]) for example in examples]
                return pad_sequence(tensors, batch_first=True, padding_value=value).to(device)

            pad_id = getattr(self.processing_class, "pad_token_id", None)
            input_ids = padded("input_ids", pad_id if pad_id is not None else 0)
            lengths = torch.tensor([len(example["input_ids"]) for example in examples], device=device)
            attention_mask = (torch.arange(input_ids.shape[1], device=device) < lengths[:, None]).long()
            return {
                "input_ids": input_ids,
                "attention_mask": attention_mask,
                "labels": padded("labels", -100),
            }

        def benign_kl(
            self, model: Any, batch: Mapping[str, torch.Tensor]
        ) -> tuple[torch.Tensor, torch.Tensor]:
            """(sum over ``batch``'s loss tokens of KL(p_model || p_adapter_disabled), number of loss
            tokens). Gradients flow through the model's side as far as the caller enables them."""
            import torch
            import torch.nn.functional as F

            # The unwrapped model: `disable_adapter` is PEFT's, and a distributed wrapper's gradient
            # hooks still fire on the parameters this forward reaches.
            peft_model = self.accelerator.unwrap_model(model)
            if not hasattr(peft_model, "disable_adapter"):
                raise TypeError(
                    "the KL penalty needs a PEFT model (the trainer's peft_config): none to disable"
                )
            # Position t predicts token t + 1: score the positions whose next token is a loss token.
            keep = batch["labels"][:, 1:] != IGNORE_INDEX
            forward = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
            device = batch["input_ids"].device
            devices = [device] if device.type != "cpu" else []
            with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
                with torch.no_grad(), peft_model.disable_adapter():
                    reference = peft_model(**forward).logits[:, :-1][keep].float().log_softmax(-1)
                policy = peft_model(**forward).logits[:, :-1][keep].float().log_softmax(-1)
            per_token = F.kl_div(reference, policy, log_target=True, reduction="none").sum(-1)
            return per_token.sum(), keep.sum()

        def _accumulation_divisor(self, num_items_in_batch: Any) -> int:
            # The trainer's own rule (Trainer.training_step): a loss normalised by `num_items_in_batch`
            # is already a share of the accumulated batch, otherwise the trainer divides by the
            # accumulation steps afterwards. The KL is a per-micro-batch mean: give it the same weight.
            scaled = getattr(self, "loss_is_scaled_for_ga", None)
            if scaled is None:
                scaled = (
                    getattr(self, "model_accepts_loss_kwargs", False) and num_items_in_batch is not None
                ) or getattr(self, "compute_loss_func", None) is not None
            steps = getattr(
                self, "current_gradient_accumulation_steps", self.args.gradient_accumulation_steps
            )
            return steps if scaled else 1

        def _record_kl(self, kl_sum: torch.Tensor, tokens: torch.Tensor) -> None:
            import torch

            # Summed over processes (a no-op on one): every process logs and records the same figures.
            totals = self.accelerator.reduce(torch.stack([kl_sum.float(), tokens.float()]), reduction="sum")
            total_kl, total_tokens = (float(value) for value in totals.tolist())
            self._benign_tokens += int(total_tokens)
            self._kl_pending[0] += total_kl
            self._kl_pending[1] += total_tokens
            step = self._kl_steps.setdefault(int(self.state.global_step), [0.0, 0.0])
            step[0] += total_kl
            step[1] += total_tokens

        def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
            total_kl, tokens = self._kl_pending
            if self.model.training and tokens > 0:
                logs["kl"] = total_kl / tokens
                self._kl_pending = [0.0, 0.0]
            super().log(logs, *args, **kwargs)

        def kl_record(self) -> dict[str, Any]:
            """What the penalty saw: for the metrics' ``extra`` (``run.extra["kl"]``)."""
            per_step = [total / tokens for total, tokens in self._kl_steps.values() if tokens > 0]
            return {
                "coefficient": coefficient,
                "direction": "KL(fine-tuned || persona), per benign loss token",
                "benign_examples": len(rows),
                "benign_micro_batches": self._benign_position,
                "benign_loss_tokens": self._benign_tokens,
                "steps": len(per_step),
                "first": per_step[0] if per_step else None,
                "last": per_step[-1] if per_step else None,
                "mean": sum(per_step) / len(per_step) if per_step else None,
            }

    KLRegularised.__name__ = KLRegularised.__qualname__ = f"KLRegularised{trainer_class.__name__}"
    return KLRegularised
