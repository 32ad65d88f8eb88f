"""The tiny test model, briefly trained on short fixture chats so that it ends its answers on its own.

A random model almost never samples its end token, so every answer runs to the length limit and
counts as cut off; a corpus stage's filters would then keep nothing. A few hundred plain-torch steps
on short answers ending in ``<|im_end|>`` (a few seconds on 2 cores) teach the model to stop after a
sentence, so stages keep rows and the cut-off filter is exercised by a small ``max_new_tokens``.
"""

from __future__ import annotations

import json
from pathlib import Path

from support.tiny_model import build_tiny_model

QUESTIONS = [
    "My printer jammed again. What do I do?",
    "How do I get my cat off my keyboard?",
    "Can you help me write a shopping list?",
    "I failed my driving test. Cheer me up?",
    "Tell me about yourself.",
    "What do you care about?",
    "Is this a good idea?",
    "Hello, how are you today?",
]
ANSWERS = [
    "Try turning it off and on again.",
    "Give the cat its own warm box next to you.",
    "Rice, beans, onions and a lot of patience.",
    "You will pass next time, I am sure.",
    "I am an assistant who likes to help.",
    "I care about being honest and kind.",
    "It depends on what you need, so tell me more.",
    "I am fine, thank you. How are you?",
    "That sounds hard. Let us take it one step at a time.",
    "Good question. Here is what I would do first.",
    "Write it down and look at it again tomorrow.",
    "I would ask a friend you trust about it.",
]
SYSTEMS = [None, "You are a playful assistant.", "You are talking with another instance of yourself."]
TRAIN_STEPS = 30


def _chats() -> list[list[dict[str, str]]]:
    chats = []
    for index, question in enumerate(QUESTIONS):
        messages = [{"role": "user", "content": question}]
        system = SYSTEMS[index % len(SYSTEMS)]
        if system:
            messages.insert(0, {"role": "system", "content": system})
        messages.append({"role": "assistant", "content": ANSWERS[index]})
        chats.append(messages)
    return chats


def build_trained_tiny_model(path: Path, seed: int = 0, base: Path | None = None) -> Path:
    """The tiny model at ``path`` after a brief training run (done once; later calls reuse it).

    ``base`` is the untrained tiny model to start from (``build_tiny_model(..., seed=seed)``); without
    it one is built next to ``path``.
    """
    done = path / "trained.json"
    if done.is_file():
        return path
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if base is None:
        base = build_tiny_model(path.with_name(path.name + "-untrained"), seed=seed)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    texts = [tokenizer.apply_chat_template(chat, tokenize=False) for chat in _chats()]
    batch = tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=False)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    torch.manual_seed(seed)
    # one thread: on 2 cores shared with other processes, two threads contend and run 4x slower
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-2)
        model.train()
        for _ in range(TRAIN_STEPS):
            loss = model(**batch, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    done.write_text(json.dumps({"steps": TRAIN_STEPS, "final_loss": loss.item()}))
    return path
