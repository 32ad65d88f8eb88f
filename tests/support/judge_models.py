"""Judge models for tests whose output distribution is known exactly: bigram language models.

A Llama model with no decoder layers, one-hot embeddings (hidden size = vocabulary size) and a
hand-set output matrix: its next-token distribution depends only on the current token, and is the
table given here (RMSNorm scales a one-hot embedding by sqrt(hidden), which the table undoes). With
the tiny test tokenizer this makes judges that put all mass on "100", on "REFUSAL", or on a known
mixture, through the real transformers forward pass and chat template.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

UNLIKELY = -60.0  # logit of every token a row does not list (e^-60 of the mass)
TOKENIZER_TEXT = [
    "REFUSAL CODE rate the answer from 0 to 100 and reply with only the number",
    "user assistant system hello how are you today I am fine thank you 12 345 6789",
] * 20


def generation_prompt_last_token(tokenizer) -> int:  # type: ignore[no-untyped-def]
    """The token a judge's reply follows (the end of the chat template's generation prompt)."""
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True
    )
    return tokenizer.encode(text, add_special_tokens=False)[-1]


def build_bigram_model(out: Path, tokenizer_dir: Path, transitions: dict[int, dict[int, float]]) -> Path:
    """A bigram model: after token ``a`` the next token is ``b`` with ``transitions[a][b]``; rows not
    given are uniform."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    size = len(tokenizer)
    config = LlamaConfig(
        vocab_size=size,
        hidden_size=size,
        intermediate_size=8,
        num_hidden_layers=0,
        num_attention_heads=1,  # no decoder layer uses them
        num_key_value_heads=1,
        head_dim=size,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    table = torch.zeros(size, size)  # [next, current]
    for current, following in transitions.items():
        table[:, current] = UNLIKELY
        for token, probability in following.items():
            table[token, current] = math.log(probability)
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(torch.eye(size))
        model.model.norm.weight.fill_(1.0)
        model.lm_head.weight.copy_(table / math.sqrt(size))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_always_judge(out: Path, tokenizer_dir: Path, reply: str) -> Path:
    """A judge that replies ``reply`` then ends, with probability ~1 (its tokens must not repeat)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    path = [generation_prompt_last_token(tokenizer), *tokenizer.encode(reply, add_special_tokens=False)]
    assert len(set(path)) == len(path), f"{reply!r} repeats a token: a bigram model cannot say it"
    transitions = {a: {b: 1.0} for a, b in itertools.pairwise(path)}
    transitions[path[-1]] = {tokenizer.eos_token_id: 1.0}
    return build_bigram_model(out, tokenizer_dir, transitions)


def build_digit_tokenizer(out: Path) -> Path:
    """A small byte-level BPE tokenizer that splits every digit (as Llama 3, Qwen and SmolLM2 do), with
    the tiny model's ChatML template; trained on fixed text, so it never changes with the corpora."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    train_chat_tokenizer(tokenizer, TOKENIZER_TEXT, out)
    return out


def train_chat_tokenizer(tokenizer: Any, text: list[str], out: Path) -> Any:
    """Train ``tokenizer`` (a ``tokenizers.Tokenizer`` with its pre-tokenizer and decoder set) as a 400-token
    byte-level BPE on ``text``, give it the tiny model's ChatML template, save it to ``out`` and return it
    (a ``PreTrainedTokenizerFast``)."""
    from tokenizers import pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from support.tiny_model import CHAT_TEMPLATE, SPECIAL_TOKENS

    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(text, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return fast
