"""Training-token counts: the chat template is included (a default system prompt too), a pair costs
prompt + chosen plus prompt + rejected, and corpus totals equal the sum of their rows."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from support.factories import pair_row, write_parquet
from transformers import PreTrainedTokenizerBase

from charforge.train.tokens import (
    TokenCountError,
    conversation_tokens,
    conversations_tokens,
    corpus_tokens,
    load_tokenizer,
    pair_tokens,
    rows_tokens,
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
