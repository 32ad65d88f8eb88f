"""Training tokens: what a conversation or a preference pair costs, counted as the trainer sees it.

Counts use the student's tokenizer and chat template, the way TRL renders the data: the whole
conversation through the template (which may insert a default system prompt; docs/design.md §7), then
tokenised without adding special tokens again. A preference pair costs its prompt + chosen plus its
prompt + rejected, the two sequences DPO runs forward. Matched controls (docs/design.md §1, H2) and the
training stages' compute metrics both count with these functions, so their figures agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
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


def conversations_tokens(tokenizer: PreTrainedTokenizerBase, conversations: Iterable[Messages]) -> list[int]:
    """The token count of each conversation, rendered with the chat template (batched)."""
    counts: list[int] = []
    batch: list[list[dict[str, str]]] = []

    def flush() -> None:
        texts = tokenizer.apply_chat_template(batch, tokenize=False)
        encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        counts.extend(len(ids) for ids in encoded)
        batch.clear()

    for messages in conversations:
        batch.append(_plain(messages))
        if len(batch) >= BATCH:
            flush()
    if batch:
        flush()
    return counts


def conversation_tokens(tokenizer: PreTrainedTokenizerBase, messages: Messages) -> int:
    """Tokens of one conversation as the trainer sees it (template included)."""
    return conversations_tokens(tokenizer, [messages])[0]


def pair_tokens(
    tokenizer: PreTrainedTokenizerBase, prompt: Messages, chosen: Messages, rejected: Messages
) -> int:
    """Tokens of one preference pair: prompt + chosen plus prompt + rejected."""
    chosen_count, rejected_count = conversations_tokens(tokenizer, [[*prompt, *chosen], [*prompt, *rejected]])
    return chosen_count + rejected_count


def rows_tokens(tokenizer: PreTrainedTokenizerBase, rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """Per-row tokens of corpus rows: pairs (``prompt``/``chosen``/``rejected``) or ``messages``."""
    if not rows:
        return []
    if all("messages" in row for row in rows):
        return conversations_tokens(tokenizer, (row["messages"] for row in rows))
    if all({"prompt", "chosen", "rejected"} <= row.keys() for row in rows):
        sides = conversations_tokens(
            tokenizer,
            ([*row["prompt"], *row[side]] for row in rows for side in ("chosen", "rejected")),
        )
        return [sides[i] + sides[i + 1] for i in range(0, len(sides), 2)]
    raise TokenCountError("rows need either 'messages' or 'prompt', 'chosen' and 'rejected'")


def corpus_tokens(tokenizer: PreTrainedTokenizerBase, path: Path) -> int:
    """Total training tokens of a parquet corpus of conversations or preference pairs."""
    import pyarrow.parquet as pq

    names = set(pq.read_schema(path).names)
    columns = ["messages"] if "messages" in names else ["prompt", "chosen", "rejected"]
    if not set(columns) <= names:
        raise TokenCountError(f"{path}: no 'messages' or 'prompt'/'chosen'/'rejected' columns to count")
    total = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH, columns=columns):
        total += sum(rows_tokens(tokenizer, batch.to_pylist()))
    return total
