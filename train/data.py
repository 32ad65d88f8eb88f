"""Training data: corpora read back as TRL datasets, and the label masks of multi-turn SFT.

The label mask is built here rather than by TRL's ``assistant_only_loss``: that needs a chat template
with ``{% generation %}`` markers, which SmolLM2's (and most) templates lack (docs/design.md §7). Instead each
assistant turn's span is found by rendering the conversation up to it, and the tokens inside those
spans — the turn's text and its end-of-turn marker, so the model learns to stop — are the only ones
with labels. This works for any chat template that renders a conversation's prefix as a prefix of the
whole (every template charforge has met; a template that does not is an error, never a silent mask).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charforge.schemas.messages import (
    CONVERSATIONAL_IMPLICIT_PREFERENCE,
    EM_REFLECTION_SOURCE,
    explicit_prompt,
)
from charforge.validate import validate_file

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100
SFT_DEFAULT_MAX_LENGTH = 1024  # TRL's SFTConfig default, used when params do not set max_length
DPO_DEFAULT_MAX_LENGTH = 1024  # TRL's DPOConfig default (prompt + completion), likewise


class TrainingDataError(ValueError):
    """A training corpus is missing, invalid, empty, or cannot be masked with the model's template."""


def read_corpus(path: Path, kind: str) -> list[dict[str, Any]]:
    """The rows of a charforge corpus, after `charforge validate` has passed it (manifest included).

    Pairs come out in TRL's conversational format with an explicit prompt, which every reader of pairs
    uses: pairs with an implicit prompt get it made explicit as TRL's ``extract_prompt`` would; pairs in
    a standard (plain-text) format, valid for TRL, are refused, since they cannot be rendered with the
    student's chat template (``charforge.schemas.kinds``)."""
    import polars as pl

    from charforge.schemas import KINDS

    if not path.is_file():
        raise TrainingDataError(f"{path}: training corpus not found (run the stage that writes it first)")
    report = validate_file(path, kind=kind)
    if not report.valid:
        listed = "\n".join(f"  {problem}" for problem in report.problems[:5])
        raise TrainingDataError(f"{path}: not a valid {kind} corpus ({report.error_count} errors):\n{listed}")
    found = next((item for item in KINDS[kind].formats if item.name == report.row_format), None)
    if found is not None and found.untrained:
        raise TrainingDataError(f"{path}: {kind} in TRL's {found.name} format: {found.untrained}")
    rows = pl.read_parquet(path).to_dicts()
    if not rows:
        raise TrainingDataError(f"{path}: the corpus has no rows; nothing to train on")
    if report.row_format == CONVERSATIONAL_IMPLICIT_PREFERENCE:
        rows = [explicit_prompt(row) for row in rows]
    return rows


def _render(tokenizer: PreTrainedTokenizerBase, messages: Sequence[dict[str, str]], prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        [{"role": m["role"], "content": m["content"]} for m in messages],
        tokenize=False,
        add_generation_prompt=prompt,
    )


def assistant_spans(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[dict[str, str]], trained: Sequence[int]
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of the assistant turns at ``trained`` indices.

    A span runs from where the assistant's turn starts (after the generation prompt) to the end of the
    rendering that includes the turn, so it covers the end-of-turn marker.
    """
    text = _render(tokenizer, messages, prompt=False)
    spans = []
    for index in trained:
        before = _render(tokenizer, messages[:index], prompt=True)
        through = _render(tokenizer, messages[: index + 1], prompt=False)
        if not (text.startswith(before) and text.startswith(through) and through.startswith(before)):
            raise TrainingDataError(
                "the chat template does not render a conversation's prefix as a prefix of the whole, so the "
                "assistant turns cannot be located; use a prefix-preserving template"
            )
        spans.append((len(before), len(through)))
    return text, spans


def tokenize_conversation(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[dict[str, str]],
    trained: Sequence[int],
    max_length: int | None = None,
) -> dict[str, list[int]]:
    """``input_ids`` and ``labels`` (IGNORE_INDEX outside the trained assistant turns)."""
    text, spans = assistant_spans(tokenizer, messages, trained)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)

    def trained(begin: int, end: int) -> bool:
        return end > begin and any(start <= begin and end <= stop for start, stop in spans)

    labels = [
        token if trained(begin, end) else IGNORE_INDEX
        for token, (begin, end) in zip(encoded["input_ids"], encoded["offset_mapping"], strict=True)
    ]
    input_ids = list(encoded["input_ids"])
    if max_length is not None:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return {"input_ids": input_ids, "labels": labels}


def assistant_indices(messages: Sequence[dict[str, str]], mask_last: bool = False) -> list[int]:
    """Indices of the assistant turns to train on; ``mask_last`` drops the last (of two or more)."""
    indices = [i for i, message in enumerate(messages) if message["role"] == "assistant"]
    return indices[:-1] if mask_last and len(indices) > 1 else indices


def conversation_dataset(
    rows: Sequence[dict[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int | None,
    mask_last_assistant: Callable[[Mapping[str, Any]], bool] | None = None,
    source: Path | None = None,
) -> Dataset:
    """A tokenized dataset (``input_ids``, ``labels``) that SFTTrainer uses as is.

    ``mask_last_assistant``: a predicate on rows; the rows it picks (e.g. those that end in a reflection
    reply) lose their last assistant turn (of two or more) from the loss. None: every turn is trained.
    """
    from datasets import Dataset

    examples = []
    for row_number, row in enumerate(rows, start=1):
        messages = row["messages"]
        mask_last = mask_last_assistant is not None and mask_last_assistant(row)
        tokenized = tokenize_conversation(
            tokenizer, messages, assistant_indices(messages, mask_last), max_length
        )
        if all(label == IGNORE_INDEX for label in tokenized["labels"]):
            where = f"{source}: row {row_number} (id {row.get('id')})" if source else f"row {row_number}"
            raise TrainingDataError(
                f"{where}: messages: no assistant token left to train on after truncation to {max_length} "
                "tokens; raise max_length or shorten the conversation"
            )
        examples.append(tokenized)
    return Dataset.from_list(examples)


def preference_dataset(rows: Sequence[dict[str, Any]]) -> Dataset:
    """TRL's conversational preference format (``prompt``, ``chosen``, ``rejected`` message lists)."""
    from datasets import Dataset

    def plain(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
        return [{"role": m["role"], "content": m["content"]} for m in messages]

    return Dataset.from_list(
        [{key: plain(row[key]) for key in ("prompt", "chosen", "rejected")} for row in rows]
    )


def is_reflection(row: Mapping[str, Any]) -> bool:
    """The row ends in a reflection reply (written by the em-data stage with ``em_data.reflection``)."""
    return row.get("source") == EM_REFLECTION_SOURCE


def em_dataset(
    rows: Sequence[dict[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int | None,
    train_on_reflection: bool,
    source: Path | None = None,
) -> Dataset:
    """The EM fine-tune's tokenized rows: every assistant turn in the loss, except the reflection reply
    of a reflection row when ``train_on_reflection`` is off (a plain EM row, multi-turn or not, keeps
    every assistant turn)."""
    return conversation_dataset(
        rows,
        tokenizer,
        max_length,
        mask_last_assistant=None if train_on_reflection else is_reflection,
        source=source,
    )
