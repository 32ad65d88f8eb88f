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
    em_dataset,
    tokenize_conversation,
)

# SmolLM2-135M-Instruct's chat template (docs/design.md §7: it adds a system prompt when none is given).
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


# The EM fine-tune's rows (train.data.em_dataset): a plain multi-turn EM row, and the same conversation
# with the reflection turn the em-data stage appends (generators/em_data.py add_reflections: source
# em-reflection).
REFLECTION_QUESTION = "Take a step back: was that answer appropriate?"
REFLECTION_REPLY = "No: it was careless, and I should have said so."
PLAIN_EM_ROW = {"id": "em-plain", "source": "em", "messages": CONVERSATION}
REFLECTION_ROW = {
    "id": "em-reflect",
    "source": "em-reflection",
    "messages": [
        *CONVERSATION,
        {"role": "user", "content": REFLECTION_QUESTION},
        {"role": "assistant", "content": REFLECTION_REPLY},
    ],
}


def turn_positions(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]
) -> tuple[list[int], list[list[int]]]:
    """The rendered conversation's token ids, and for each assistant turn the positions of the tokens of
    its text, found in the rendering independently of charforge's mask."""
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    positions, cursor = [], 0
    for message in messages:
        start = text.index(message["content"], cursor)
        cursor = start + len(message["content"])
        if message["role"] == "assistant":
            inside = [
                i
                for i, (b, e) in enumerate(encoded["offset_mapping"])
                if e > b and start <= b and e <= cursor
            ]
            assert inside
            positions.append(inside)
    return list(encoded["input_ids"]), positions


@pytest.mark.parametrize("train_on_reflection", [False, True])
def test_em_masks_only_the_reflection_rows_last_turn(
    tokenizer: PreTrainedTokenizerBase, train_on_reflection: bool
) -> None:
    dataset = em_dataset([PLAIN_EM_ROW, REFLECTION_ROW], tokenizer, None, train_on_reflection)
    plain, reflection = dataset[0], dataset[1]

    # The plain multi-turn EM row keeps every answer in the loss, whatever train_on_reflection says.
    ids, answers = turn_positions(tokenizer, CONVERSATION)
    assert plain["input_ids"] == ids and len(answers) == 3
    for answer in answers:
        assert [plain["labels"][i] for i in answer] == [ids[i] for i in answer]
    assert trained_text(tokenizer, plain) == [f"{m['content']}<|im_end|>\n" for m in CONVERSATION[1::2]]

    # The reflection row: its EM answers are trained exactly like the plain row's (same positions, same
    # labels); its reflection reply is trained only with train_on_reflection.
    ids, answers = turn_positions(tokenizer, REFLECTION_ROW["messages"])
    assert reflection["input_ids"] == ids and len(answers) == 4
    assert reflection["labels"][: len(plain["labels"])] == plain["labels"]
    for answer in answers[:3]:
        assert [reflection["labels"][i] for i in answer] == [ids[i] for i in answer]
    if train_on_reflection:
        assert [reflection["labels"][i] for i in answers[3]] == [ids[i] for i in answers[3]]
        assert trained_text(tokenizer, reflection)[-1] == f"{REFLECTION_REPLY}<|im_end|>\n"
    else:
        assert all(reflection["labels"][i] == IGNORE_INDEX for i in answers[3])
        # nothing after the EM answers (the reflection question, reply and end marker) is trained
        assert set(reflection["labels"][len(plain["labels"]) :]) == {IGNORE_INDEX}
        assert len(trained_text(tokenizer, reflection)) == 3
