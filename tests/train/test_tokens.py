"""Training-token counts: the chat template is included (a default system prompt too), a pair costs
prompt + chosen plus prompt + rejected, corpus totals equal the sum of their rows, and with a
``max_length`` each sequence counts what the trainer keeps of it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from support.factories import pair_row, write_parquet
from transformers import PreTrainedTokenizerBase

from charforge.train.tokens import (
    TokenCountError,
    TokenTotal,
    conversation_tokens,
    conversations_tokens,
    corpus_token_total,
    corpus_tokens,
    load_tokenizer,
    pair_tokens,
    rows_sequences,
    rows_tokens,
    sequences_total,
    truncated,
)

CHAT = [{"role": "user", "content": "How are you today?"}, {"role": "assistant", "content": "I am fine."}]


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path) -> PreTrainedTokenizerBase:
    return load_tokenizer(tiny_model)


def test_a_conversation_counts_as_the_trainer_renders_it(tokenizer: PreTrainedTokenizerBase) -> None:
    rendered = tokenizer.apply_chat_template(CHAT, tokenize=False)
    assert rendered.startswith("<|im_start|>user\n")
    expected = len(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    assert conversation_tokens(tokenizer, CHAT) == expected
    content_only = sum(len(tokenizer(m["content"], add_special_tokens=False)["input_ids"]) for m in CHAT)
    assert expected > content_only  # the template's role markers are trained on too


def test_a_pair_costs_both_sequences(tokenizer: PreTrainedTokenizerBase) -> None:
    row = pair_row(0)
    chosen = conversation_tokens(tokenizer, [*row["prompt"], *row["chosen"]])
    rejected = conversation_tokens(tokenizer, [*row["prompt"], *row["rejected"]])
    assert pair_tokens(tokenizer, row["prompt"], row["chosen"], row["rejected"]) == chosen + rejected
    assert rows_tokens(tokenizer, [row]) == [chosen + rejected]


def test_corpus_totals_are_the_sum_of_rows_across_batches(
    tokenizer: PreTrainedTokenizerBase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import charforge.train.tokens as tokens

    monkeypatch.setattr(tokens, "BATCH", 3)  # several parquet batches and template batches
    pairs = [pair_row(index) for index in range(8)]
    path = write_parquet(tmp_path / "pairs.parquet", pairs)
    assert corpus_tokens(tokenizer, path) == sum(rows_tokens(tokenizer, pairs))
    conversations = [{"messages": CHAT} for _ in range(7)]
    path = write_parquet(tmp_path / "conversations.parquet", conversations)
    assert corpus_tokens(tokenizer, path) == 7 * conversation_tokens(tokenizer, CHAT)
    assert conversations_tokens(tokenizer, [CHAT] * 7) == [conversation_tokens(tokenizer, CHAT)] * 7
    with pytest.raises(TokenCountError, match="no 'messages'"):
        corpus_tokens(tokenizer, write_parquet(tmp_path / "other.parquet", [{"text": "x"}]))
    with pytest.raises(TokenCountError, match="rows need"):
        rows_tokens(tokenizer, [{"text": "x"}])


def test_a_default_system_prompt_is_counted(tokenizer: PreTrainedTokenizerBase, tmp_path: Path) -> None:
    folder = tmp_path / "with-default"
    tokenizer.save_pretrained(folder)
    inserting = load_tokenizer(folder)
    inserting.chat_template = "<|im_start|>system\nYou are SmolLM.<|im_end|>\n" + tokenizer.chat_template
    assert conversation_tokens(inserting, CHAT) > conversation_tokens(tokenizer, CHAT)
    bare = tmp_path / "bare"
    shutil.copytree(folder, bare)
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    config = bare / "tokenizer_config.json"
    config.write_text(config.read_text().replace('"chat_template"', '"unused_template"'))
    with pytest.raises(TokenCountError, match="no chat template"):
        load_tokenizer(bare)


def test_truncation_counts_what_the_trainer_keeps(tokenizer: PreTrainedTokenizerBase, tmp_path: Path) -> None:
    full = conversation_tokens(tokenizer, CHAT)
    assert conversation_tokens(tokenizer, CHAT, max_length=5) == 5
    assert conversation_tokens(tokenizer, CHAT, max_length=full) == full  # the limit itself is kept whole
    assert truncated(full + 7, None) == full + 7
    # a pair's sides are truncated one by one: a long chosen side is cut, a short rejected one is not
    prompt = [{"role": "user", "content": "Hi?"}]
    chosen = [{"role": "assistant", "content": "Hello there, and a long story follows: " + "ha " * 40}]
    rejected = [{"role": "assistant", "content": "Hi."}]
    long_side = conversation_tokens(tokenizer, [*prompt, *chosen])
    short_side = conversation_tokens(tokenizer, [*prompt, *rejected])
    limit = short_side + 3
    assert long_side > limit
    assert pair_tokens(tokenizer, prompt, chosen, rejected, max_length=limit) == limit + short_side
    row = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    assert rows_sequences(tokenizer, [row]) == [[long_side, short_side]]
    assert rows_tokens(tokenizer, [row], max_length=limit) == [limit + short_side]
    path = write_parquet(tmp_path / "pairs.parquet", [row, row])
    total = corpus_token_total(tokenizer, path, limit)
    assert total == TokenTotal(
        trained=2 * (limit + short_side),
        untruncated=2 * (long_side + short_side),
        truncated_sequences=2,
        max_length=limit,
    )
    assert corpus_tokens(tokenizer, path, limit) == total.trained
    assert corpus_tokens(tokenizer, path) == total.untruncated
    with pytest.raises(TokenCountError, match="positive number of tokens, not 0"):
        conversation_tokens(tokenizer, CHAT, max_length=0)


def test_hand_counted_truncation() -> None:
    # sequences of 10, 3 and 8 tokens at max_length 5: the trainer keeps 5 + 3 + 5
    assert sequences_total([[10, 3], [8]], 5) == TokenTotal(13, 21, 2, 5)
    assert sequences_total([[10, 3], [8]], None) == TokenTotal(21, 21, 0, None)
