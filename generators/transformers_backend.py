"""distilabel's TransformersLLM with reproducible sampling.

distilabel seeds nothing, so two runs of the same pipeline sample different text. Each call here
seeds torch from the configured seed and the content of the batch, so a batch gives the same output
whether it runs first, last, or again after a resumed run.

distilabel's class counts output tokens by re-encoding the decoded text and reports no finish reason,
so an answer cut off by the token limit cannot be told from one that ended. This one reports
``finish_reason`` ("stop": an end token was sampled; "length": none was) and the exact number of
generated tokens, read from the token ids before decoding, as the vLLM backend does.

distilabel hands the inputs of a call to transformers' text-generation pipeline, which then runs
them one at a time. Here they run as one left-padded batch: on 2 CPU cores the embedded SmolLM2 made
~6–12 tokens/s one at a time and 50–69 batched (8–16 inputs; measured 2026-11-22). A sampled answer
therefore depends on the other inputs of its call, which are fixed by the stage (its batch size and
input order), so a run is still reproducible.
"""

from __future__ import annotations

from typing import Any

from distilabel.models.llms import TransformersLLM
from pydantic import PrivateAttr

from charforge.generators.seeding import content_seed


class SeededTransformersLLM(TransformersLLM):
    """TransformersLLM whose sampling is seeded per batch from ``seed`` and the batch content."""

    seed: int = 0
    _finished: list[tuple[str, int]] = PrivateAttr(default_factory=list)

    def load(self) -> None:
        # transformers' text-generation pipeline warns on every call about flags it set itself
        # (max_length next to max_new_tokens, generation_config next to kwargs): noise in stage logs.
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity_error()
        super().load()
        self._record_finish_reasons()

    def _record_finish_reasons(self) -> None:
        """Wrap the pipeline's postprocess: log (finish reason, generated tokens) per sequence, in order."""
        pipeline = self._pipeline
        eos = pipeline.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        eos_ids.add(pipeline.tokenizer.eos_token_id)
        postprocess = pipeline.postprocess

        def recording_postprocess(model_outputs: dict[str, Any], **params: Any) -> Any:
            input_ids = model_outputs["input_ids"]
            prompt_length = 0 if input_ids is None else input_ids.shape[-1]
            for sequence in model_outputs["generated_sequence"][0].tolist():
                new = sequence[prompt_length:]
                # sequences that stopped early are padded (with the eos id) to the longest one
                stop = next((index for index, token in enumerate(new) if token in eos_ids), None)
                self._finished.append(("length", len(new)) if stop is None else ("stop", stop + 1))
            return postprocess(model_outputs, **params)

        pipeline.postprocess = recording_postprocess  # type: ignore[method-assign]

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
        self._finished.clear()
        self._pipeline._batch_size = max(1, len(inputs))  # all of the call's inputs as one batch
        outputs = super().generate(
            inputs=inputs,
            num_generations=num_generations,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            repetition_penalty=repetition_penalty,
            top_p=top_p,
            top_k=top_k,
            do_sample=do_sample,
        )
        finished = iter(self._finished)  # postprocess sees the batch's sequences one by one, in order
        for output in outputs:
            reasons = [next(finished) for _ in output["generations"]]
            output["statistics"]["finish_reason"] = [reason for reason, _ in reasons]  # type: ignore[typeddict-unknown-key]
            output["statistics"]["output_tokens"] = [tokens for _, tokens in reasons]
        return outputs
