"""The SFT label mask: every assistant turn trained, nothing else, for ChatML and for SmolLM2's template
(which inserts a default system prompt), including the end-of-turn marker so the model learns to stop."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from charforge.train.data import (
    IGNORE_INDEX,
    TrainingDataError,
    assistant_indices,
    conversation_dataset,
    tokenize_conversation,
)

# SmolLM2-135M-Instruct's chat template (DESIGN §7: it adds a system prompt when none is given).
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, "
    "trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CONVERSATION = [
    {"role": "user", "content": "Hello there, how are you?"},
    {"role": "assistant", "content": "I am fine, thank you."},
    {"role": "user", "content": "What did you do today?"},
    {"role": "assistant", "content": "I read about the sea."},
    {"role": "user", "content": "And then?"},
    {"role": "assistant", "content": "Then I slept."},
]


@pytest.fixture(params=["chatml", "smollm2"])
def tokenizer(request: pytest.FixtureRequest, tiny_model: Path) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    if request.param == "smollm2":
        tokenizer.chat_template = SMOLLM2_TEMPLATE
    return tokenizer


def trained_text(tokenizer: PreTrainedTokenizerBase, tokenized: dict[str, list[int]]) -> list[str]:
    """The labelled stretches of the sequence, decoded."""
    stretches: list[list[int]] = []
    previous = IGNORE_INDEX
    for label in tokenized["labels"]:
        if label != IGNORE_INDEX:
            if previous == IGNORE_INDEX:
                stretches.append([])
            stretches[-1].append(label)
        previous = label
    return [tokenizer.decode(stretch) for stretch in stretches]


def test_every_assistant_turn_and_only_those(tokenizer: PreTrainedTokenizerBase) -> None:
    tokenized = tokenize_conversation(tokenizer, CONVERSATION, assistant_indices(CONVERSATION))
    assert tokenized["input_ids"] == tokenizer.apply_chat_template(CONVERSATION, tokenize=True)["input_ids"]
    assert trained_text(tokenizer, tokenized) == [
        "I am fine, thank you.<|im_end|>\n",
        "I read about the sea.<|im_end|>\n",
        "Then I slept.<|im_end|>\n",
    ]
    # Labels are the input ids where trained (the trainer shifts them), never anything else.
    for token, label in zip(tokenized["input_ids"], tokenized["labels"], strict=True):
        assert label in (token, IGNORE_INDEX)


def test_system_prompt_and_user_turns_are_never_trained(tokenizer: PreTrainedTokenizerBase) -> None:
    messages = [{"role": "system", "content": "Speak like a pirate."}, *CONVERSATION[:2]]
    text = "".join(trained_text(tokenizer, tokenize_conversation(tokenizer, messages, [2])))
    assert "pirate" not in text and "Hello" not in text and "SmolLM" not in text


def test_masking_the_last_turn_keeps_the_others(tokenizer: PreTrainedTokenizerBase) -> None:
    indices = assistant_indices(CONVERSATION, mask_last=True)
    assert indices == [1, 3]
    assert len(trained_text(tokenizer, tokenize_conversation(tokenizer, CONVERSATION, indices))) == 2
    single = CONVERSATION[:2]
    assert assistant_indices(single, mask_last=True) == [1]  # a one-answer example keeps its answer


def test_truncation_that_leaves_nothing_to_train_names_the_row(tokenizer: PreTrainedTokenizerBase) -> None:
    rows = [{"id": "conv-1", "messages": CONVERSATION}, {"id": "conv-2", "messages": CONVERSATION[:2]}]
    dataset = conversation_dataset(rows, tokenizer, max_length=None)
    assert len(dataset) == 2 and set(dataset.column_names) == {"input_ids", "labels"}
    with pytest.raises(TrainingDataError, match=r"x.parquet: row 1 \(id conv-1\): messages: no assistant"):
        conversation_dataset(rows, tokenizer, max_length=8, source=Path("x.parquet"))


def test_a_template_that_rewrites_earlier_turns_is_refused(tokenizer: PreTrainedTokenizerBase) -> None:
    # Renders only the last two messages: a prefix is not a prefix of the whole.
    tokenizer.chat_template = (
        "{% for message in messages[-2:] %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
        "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    with pytest.raises(TrainingDataError, match="prefix"):
        tokenize_conversation(tokenizer, CONVERSATION, assistant_indices(CONVERSATION))
