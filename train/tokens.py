"""Training tokens: what a conversation or a preference pair costs, counted as the trainer sees it.

Counts use the student's tokenizer and chat template, the way TRL renders the data: the whole
conversation through the template (which may insert a default system prompt; docs/design.md §7), then
tokenised without adding special tokens again. A preference pair costs its prompt + chosen plus its
prompt + rejected, the two sequences DPO runs forward. With ``max_length`` a sequence longer than it
counts ``max_length`` tokens, as the trainer truncates it (TRL keeps the start of each sequence; a pair's
two sides are truncated separately). Matched controls (docs/design.md §1, H2) and the corpus stages'
token metrics count with these functions; the controls count after truncation, the corpus stages'
``tokens`` metrics before it (what the corpus holds).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Messages = Sequence[Mapping[str, str]]
# Conversations rendered and tokenised per call: bounds memory on large corpora and lets the fast
# tokenizer work on a batch at once.
BATCH = 1024


class TokenCountError(ValueError):
    """The tokenizer cannot render chats, or a corpus has no columns to count."""


def load_tokenizer(model: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer of a local model folder (or a hub id already in the local cache)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model))
    if not getattr(tokenizer, "chat_template", None):
        raise TokenCountError(f"the tokenizer of {model} has no chat template: cannot count chat tokens")
    return tokenizer


def _plain(messages: Messages) -> list[dict[str, str]]:
    return [{"role": message["role"], "content": message["content"]} for message in messages]


def truncated(count: int, max_length: int | None) -> int:
    """What the trainer keeps of a ``count``-token sequence: at most ``max_length`` (None: all)."""
    if max_length is None:
        return count
    if max_length < 1:
        raise TokenCountError(f"max_length must be a positive number of tokens, not {max_length}")
    return min(count, max_length)


def conversations_tokens(
    tokenizer: PreTrainedTokenizerBase, conversations: Iterable[Messages], max_length: int | None = None
) -> list[int]:
    """The token count of each conversation, rendered with the chat template (batched), truncated at
    ``max_length``."""
    counts: list[int] = []
    batch: list[list[dict[str, str]]] = []

    def flush() -> None:
        texts = tokenizer.apply_chat_template(batch, tokenize=False)
        encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        counts.extend(truncated(len(ids), max_length) for ids in encoded)
        batch.clear()

    for messages in conversations:
        batch.append(_plain(messages))
        if len(batch) >= BATCH:
            flush()
    if batch:
        flush()
    return counts


def conversation_tokens(
    tokenizer: PreTrainedTokenizerBase, messages: Messages, max_length: int | None = None
) -> int:
    """Tokens of one conversation as the trainer sees it (template included, truncated at ``max_length``)."""
    return conversations_tokens(tokenizer, [messages], max_length)[0]


def pair_tokens(
    tokenizer: PreTrainedTokenizerBase,
    prompt: Messages,
    chosen: Messages,
    rejected: Messages,
    max_length: int | None = None,
) -> int:
    """Tokens of one preference pair: prompt + chosen plus prompt + rejected, each truncated at
    ``max_length``."""
    chosen_count, rejected_count = conversations_tokens(
        tokenizer, [[*prompt, *chosen], [*prompt, *rejected]], max_length
    )
    return chosen_count + rejected_count


def rows_sequences(tokenizer: PreTrainedTokenizerBase, rows: Sequence[Mapping[str, Any]]) -> list[list[int]]:
    """Per row, the untruncated token counts of the sequences the trainer runs: one for ``messages``,
    prompt + chosen and prompt + rejected for a pair (``prompt``/``chosen``/``rejected``)."""
    if not rows:
        return []
    if all("messages" in row for row in rows):
        return [[count] for count in conversations_tokens(tokenizer, (row["messages"] for row in rows))]
    if all({"prompt", "chosen", "rejected"} <= row.keys() for row in rows):
        sides = conversations_tokens(
            tokenizer,
            ([*row["prompt"], *row[side]] for row in rows for side in ("chosen", "rejected")),
        )
        return [sides[i : i + 2] for i in range(0, len(sides), 2)]
    raise TokenCountError("rows need either 'messages' or 'prompt', 'chosen' and 'rejected'")


def rows_tokens(
    tokenizer: PreTrainedTokenizerBase, rows: Sequence[Mapping[str, Any]], max_length: int | None = None
) -> list[int]:
    """Per-row tokens of corpus rows (pairs or ``messages``), each sequence truncated at ``max_length``."""
    return [sum(truncated(count, max_length) for count in row) for row in rows_sequences(tokenizer, rows)]


@dataclass(frozen=True)
class TokenTotal:
    """A corpus's training tokens: ``trained`` after truncation at ``max_length``, ``untruncated``
    before, and how many sequences were cut."""

    trained: int
    untruncated: int
    truncated_sequences: int
    max_length: int | None

    def as_dict(self) -> dict[str, int | None]:
        return {
            "trained": self.trained,
            "untruncated": self.untruncated,
            "truncated_sequences": self.truncated_sequences,
            "max_length": self.max_length,
        }


def sequences_total(sequences: Iterable[Sequence[int]], max_length: int | None) -> TokenTotal:
    """The ``TokenTotal`` of rows given as ``rows_sequences`` returns them."""
    flat = [count for row in sequences for count in row]
    return TokenTotal(
        trained=sum(truncated(count, max_length) for count in flat),
        untruncated=sum(flat),
        truncated_sequences=sum(1 for count in flat if truncated(count, max_length) < count),
        max_length=max_length,
    )


def corpus_token_total(
    tokenizer: PreTrainedTokenizerBase, path: Path, max_length: int | None = None
) -> TokenTotal:
    """Training tokens of a parquet corpus of conversations or preference pairs, before and after
    truncation at ``max_length`` (tokenised once)."""
    import pyarrow.parquet as pq

    names = set(pq.read_schema(path).names)
    columns = ["messages"] if "messages" in names else ["prompt", "chosen", "rejected"]
    if not set(columns) <= names:
        raise TokenCountError(f"{path}: no 'messages' or 'prompt'/'chosen'/'rejected' columns to count")
    sequences: list[list[int]] = []
    for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH, columns=columns):
        sequences += rows_sequences(tokenizer, batch.to_pylist())
    return sequences_total(sequences, max_length)


def corpus_tokens(tokenizer: PreTrainedTokenizerBase, path: Path, max_length: int | None = None) -> int:
    """Total training tokens of a parquet corpus of conversations or preference pairs, each sequence
    truncated at ``max_length``."""
    return corpus_token_total(tokenizer, path, max_length).trained
