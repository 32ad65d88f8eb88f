"""distilabel's TransformersLLM with reproducible sampling, exact statistics and prefix reuse.

distilabel seeds nothing, so two runs of the same pipeline sample different text. Each call here
seeds torch from the configured seed and the content of the batch, so a batch gives the same output
whether it runs first, last, or again after a resumed run.

distilabel's class counts output tokens by re-encoding the decoded text and reports no finish reason,
so an answer cut off by the token limit cannot be told from one that ended. This one reports
``finish_reason`` ("stop": an end token was sampled; "length": none was) and the exact number of
generated tokens, read from the token ids before decoding, as the vLLM backend does; ``input_tokens``
is the exact length of the rendered prompt, once per generation (as the vLLM backend reports it).

distilabel hands the inputs of a call to transformers' text-generation pipeline, which then runs
them one at a time. Here they run as one left-padded batch: on 2 CPU cores the embedded SmolLM2 made
~6–12 tokens/s one at a time and 50–69 batched (8–16 inputs; measured 2026-11-22). A sampled answer
therefore depends on the other inputs of its call, which are fixed by the stage (its batch size and
input order), so a run is still reproducible.

Prefix reuse: the batch is generated here over the pipeline's model and tokenizer rather than through
the pipeline, so that a long leading part shared by all of a call's prompts (the teacher's ~490-token
system prompt in the distill stage) runs through the model once, into a KV cache, instead of once per
row. The cache of the most recent prefix is kept, and a later call with the same shared prefix (the
next batch of the stage) skips it altogether. Rows are laid out [shared prefix][left padding][own
suffix]; ``generate`` derives positions from the attention mask's cumulative sum, so each row's tokens
keep the positions they have without reuse. In fp32 the logits match the plain batch's to ~1e-5 and
greedy answers are the same token for token (tests/generators/test_prefix_reuse.py); in bf16 the
prefix rounds differently when computed on its own (first-token logits differ by up to ~0.6 on a
scale of ~30, against ~0.25 between a prompt run alone or in a batch), so sampled answers differ from
those without reuse as they would with another batch size: still reproducible, since a prefix's cache
is always computed the same way (see ``_prefix_cache_for``). Measured on the embedded SmolLM2 (bf16,
16 chats of 499–518 tokens sharing 483, prefill only, 2 CPU cores shared with a benchmark at load
4–5): 12.4–16.2 s without reuse, 3.6–3.7 s with the prefix computed in the call and 2.1–2.4 s with it
cached by the previous call (best runs; the noisiest runs of both reuse cases were 10–20 s). With 96
new tokens the same runs took 147–295 s, and the noise swamped the difference.
"""

from __future__ import annotations

from inspect import signature
from typing import TYPE_CHECKING, Any

from distilabel.models.llms import TransformersLLM
from pydantic import PrivateAttr

from charforge.generators.seeding import content_seed

if TYPE_CHECKING:
    import torch
    from transformers import DynamicCache, PreTrainedModel

# Shortest shared prefix (in tokens) worth a separate batch-1 pass into a cache; below it the batch runs
# as a plain left-padded batch (the saving would be a few tokens per row).
PREFIX_REUSE_MIN_TOKENS = 64


def _common_length(first: list[int] | tuple[int, ...], second: list[int] | tuple[int, ...]) -> int:
    """How many leading token ids ``first`` and ``second`` share."""
    length = 0
    for a, b in zip(first, second, strict=False):
        if a != b:
            break
        length += 1
    return length


def _cache_copy(cache: DynamicCache) -> DynamicCache:
    """A new cache holding what ``cache`` holds, which stays as it was (generate grows the cache it is
    given, and the stored one must stay the prefix alone)."""
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=[(layer.keys, layer.values) for layer in cache.layers])


class SeededTransformersLLM(TransformersLLM):
    """TransformersLLM whose sampling is seeded per batch from ``seed`` and the batch content, which
    reports exact token counts and finish reasons, and which prefills a prefix shared by a call's
    prompts once (and keeps it for the next call)."""

    seed: int = 0
    _eos_ids: set[int] = PrivateAttr(default_factory=set)
    # whether this model's cache is one plain KV cache per layer, which can be copied and repeated
    _reuse_supported: bool = PrivateAttr(default=False)
    # the most recent shared prefix (token ids) and its KV cache (batch 1); one entry bounds the memory
    _prefix_ids: tuple[int, ...] = PrivateAttr(default=())
    _prefix_cache: Any = PrivateAttr(default=None)  # a DynamicCache (transformers is imported lazily)

    def load(self) -> None:
        # transformers warns on every call about flags set here (temperature while greedy, sampling
        # kwargs next to the pipeline's generation_config): noise in stage logs.
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity_error()
        super().load()
        pipeline = self._pipeline
        eos = pipeline.generation_config.eos_token_id
        self._eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        self._eos_ids.add(pipeline.tokenizer.eos_token_id)
        self._reuse_supported = self._cache_is_plain(pipeline.model)
        self._forget_prefix()

    def unload(self) -> None:
        self._forget_prefix()
        super().unload()

    def _forget_prefix(self) -> None:
        self._prefix_ids, self._prefix_cache = (), None

    def _cache_is_plain(self, model: PreTrainedModel) -> bool:
        """Prefix reuse copies and repeats the cache per layer: only for models whose default cache is one
        full-attention ``DynamicLayer`` per layer (no sliding windows, no linear-attention states) and whose
        generation config asks for no other cache (generate refuses a cache passed next to one)."""
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        if model.config.is_encoder_decoder or self._pipeline.generation_config.cache_implementation:
            return False
        try:
            layers = DynamicCache(config=model.config).layers
        except Exception:  # a config the cache cannot read: do without reuse rather than fail the stage
            return False
        return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)

    # distilabel derives the runtime parameters of `generation_kwargs` from this signature, so it
    # repeats the parent's instead of taking **kwargs.
    def generate(  # type: ignore[override]
        self,
        inputs: list[Any],
        num_generations: int = 1,
        max_new_tokens: int = 128,
        temperature: float = 0.1,
        repetition_penalty: float = 1.1,
        top_p: float = 1.0,
        top_k: int = 0,
        do_sample: bool = True,
    ) -> list[Any]:
        import torch

        torch.manual_seed(content_seed(self.seed, inputs))
        pipeline = self._pipeline
        tokenizer = pipeline.tokenizer
        # The chat template writes any special tokens the prompt needs; the tokenizer must not add
        # a second <bos> (vLLM's backend strips that one, docs/design.md §7).
        prompts: list[list[int]] = [
            tokenizer(self.prepare_input(chat), add_special_tokens=False)["input_ids"] for chat in inputs
        ]
        shared = self._shared_length(prompts)
        extra: dict[str, Any] = {}  # only what distilabel set up for structured output
        if self._prefix_allowed_tokens_fn is not None:
            extra["prefix_allowed_tokens_fn"] = self._prefix_allowed_tokens_fn
        if self._logits_processor is not None:
            extra["logits_processor"] = self._logits_processor

        with torch.no_grad():
            cache = self._prefix_cache_for(prompts[0][:shared]) if shared else None
            input_ids, attention_mask = self._batch(prompts, shared, num_generations)
            if cache is not None:
                # generate expands input_ids for num_return_sequences but not a cache passed to it,
                # so the rows are expanded here and the cache repeated to match
                cache.batch_repeat_interleave(input_ids.shape[0])
            sequences = pipeline.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                past_key_values=cache,
                generation_config=pipeline.generation_config,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                repetition_penalty=repetition_penalty,
                top_p=top_p,
                top_k=top_k,
                do_sample=do_sample,
                pad_token_id=tokenizer.eos_token_id,  # as distilabel passes it: finished rows pad with eos
                **extra,
            )
        new_tokens: list[list[int]] = sequences[:, input_ids.shape[1] :].tolist()
        # as the pipeline decodes (return_full_text=False): a response template keeps special tokens
        skip_special = not getattr(tokenizer, "response_template", None)

        outputs: list[Any] = []
        for index, prompt in enumerate(prompts):
            rows = new_tokens[index * num_generations : (index + 1) * num_generations]
            reasons = [self._finish(row) for row in rows]
            texts = [
                tokenizer.decode(row, skip_special_tokens=skip_special, clean_up_tokenization_spaces=True)
                for row in rows
            ]
            outputs.append(
                {
                    "generations": texts,
                    "statistics": {
                        "input_tokens": [len(prompt)] * num_generations,
                        "output_tokens": [tokens for _, tokens in reasons],
                        "finish_reason": [reason for reason, _ in reasons],
                    },
                }
            )
        return outputs

    def _finish(self, row: list[int]) -> tuple[str, int]:
        """(finish reason, generated tokens) of one generated row; rows that stopped before the longest
        one are padded with the eos id, so the first end token marks the end."""
        stop = next((index for index, token in enumerate(row) if token in self._eos_ids), None)
        return ("length", len(row)) if stop is None else ("stop", stop + 1)

    def _shared_length(self, prompts: list[list[int]]) -> int:
        """How many leading tokens of the call's prompts run once through a cache: their common
        prefix, less at least one token of each row's own (generate needs a new token per row to
        start from), or 0 where that is shorter than ``PREFIX_REUSE_MIN_TOKENS``."""
        if not self._reuse_supported or not prompts:
            return 0
        shared = min(len(prompt) for prompt in prompts) - 1
        for prompt in prompts[1:]:
            shared = min(shared, _common_length(prompts[0], prompt))
        return shared if shared >= PREFIX_REUSE_MIN_TOKENS else 0

    def _prefix_cache_for(self, prefix: list[int]) -> DynamicCache:
        """A new batch-1 cache holding ``prefix``: a copy of the stored one when it holds exactly
        ``prefix``, else ``prefix`` run through the model in one pass (and stored instead).

        Only an exact match is reused, never a stored cache cut short or extended: a prefix computed in
        passes of other shapes rounds differently (visibly in bf16), and the answers of a call would
        then depend on which calls ran before it, not on its content alone. A prefix that does not
        match costs one batch-1 pass, a small part of what reuse saves."""
        import torch
        from transformers import DynamicCache

        if tuple(prefix) != self._prefix_ids:
            model = self._pipeline.model
            cache = DynamicCache()
            # the prefix's logits are never read, and projecting every position onto the vocabulary
            # costs as much as a good part of the model: keep one where the model allows it
            keep = {"logits_to_keep": 1} if "logits_to_keep" in signature(model.forward).parameters else {}
            model(
                input_ids=torch.tensor([prefix], device=model.device),
                position_ids=torch.arange(len(prefix), device=model.device)[None],
                past_key_values=cache,
                use_cache=True,
                **keep,
            )
            self._prefix_ids, self._prefix_cache = tuple(prefix), cache
        return _cache_copy(self._prefix_cache)

    def _batch(
        self, prompts: list[list[int]], shared: int, num_generations: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Input ids and attention mask, rows [shared prefix][left padding][own suffix] (with no shared
        prefix: a plain left-padded batch, as the pipeline builds it), each row ``num_generations``
        times in a row, as ``num_return_sequences`` would expand them."""
        import torch

        tokenizer = self._pipeline.tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        width = max(len(prompt) for prompt in prompts) - shared
        ids: list[list[int]] = []
        mask: list[list[int]] = []
        for prompt in prompts:
            suffix = prompt[shared:]
            padding = width - len(suffix)
            ids.append(prompt[:shared] + [pad] * padding + suffix)
            mask.append([1] * shared + [0] * padding + [1] * len(suffix))
        device = self._pipeline.model.device
        input_ids = torch.tensor(ids, dtype=torch.long, device=device)
        attention_mask = torch.tensor(mask, dtype=torch.long, device=device)
        if num_generations > 1:
            input_ids = input_ids.repeat_interleave(num_generations, dim=0)
            attention_mask = attention_mask.repeat_interleave(num_generations, dim=0)
        return input_ids, attention_mask
