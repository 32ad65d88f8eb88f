"""Folding LoRA adapters into a model: the one utility every stage that needs "the model with its
adapters" reuses (introspection generates with student+DPO, SFT trains on it, EM trains on the persona,
evaluation samples from persona and persona+EM).

A folded model is a plain Hugging Face folder, because distilabel's transformers backend and vLLM
both take a model path (and vLLM's LoRA serving caps the rank; docs/design.md §2). Folders are cached under
``<cache>/folded/<key>/`` where the key hashes the base model's identity, each adapter's files and its
weight, and the dtype: the same inputs are folded once, and changed adapters never reuse a stale fold.
Identities name what a model is, never where it lies, so two checkouts of a project agree on every key.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charforge.io import atomic_dir, canonical_json, file_sha256, memoised_file_sha256

if TYPE_CHECKING:
    from transformers import PreTrainedModel

FOLD_FORMAT = 1  # bump when the folding procedure changes, so old folds are not reused
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
FOLD_RECORD = "charforge-fold.json"
HASH_INDEX = "file-hashes.json"  # in the cache: sha256 of local model files by path and stat


@dataclass(frozen=True)
class Adapter:
    """A saved PEFT LoRA adapter and the weight its update is folded in with (1.0 = as trained)."""

    path: Path
    weight: float = 1.0


def load_causal_lm(model: str, dtype: str = "auto") -> PreTrainedModel:
    """A causal LM from a local folder or a hub id already in the cache, in ``dtype``."""
    import torch
    from transformers import AutoModelForCausalLM

    torch_dtype: Any = "auto" if dtype == "auto" else getattr(torch, dtype)
    return AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype)


def model_identity(model: str, cache: Path | None = None) -> str:
    """What identifies a base model in a fold key and in an adapter's record: what it *is*, never where
    it lies, so two checkouts of a project (each with its own cache) agree on it.

    A fold is named by its key and a converted embedded model by its GGUF file's content hash; any
    other local folder by the sha256 of each of its files (remembered per file in the cache's
    ``file-hashes.json``, so a multi-GB model is hashed once, and again only when a file changes); a
    hub id by its name and the revision of its snapshot in the local Hugging Face cache.
    """
    from charforge.generators.embedded import converted_identity

    path = Path(model)
    if not path.is_dir():
        return _hub_identity(model)
    record = path / FOLD_RECORD
    if record.is_file():
        return f"fold:{json.loads(record.read_text())['key']}"
    converted = converted_identity(path)
    if converted is not None:
        return converted
    if cache is None:
        from charforge.generators.llm import cache_dir

        cache = cache_dir()
    index = cache / HASH_INDEX
    files = sorted(p for p in path.rglob("*") if p.is_file())
    contents = [(p.relative_to(path).as_posix(), memoised_file_sha256(p, index)) for p in files]
    return f"folder:{hashlib.sha256(canonical_json(contents).encode()).hexdigest()}"


def _hub_identity(model: str) -> str:
    """A hub id with the commit of its snapshot in the local Hugging Face cache, when there is one."""
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "config.json")
    except Exception:  # not a valid hub id: the name is all there is
        cached = None
    return f"hub:{model}@{Path(cached).parent.name}" if isinstance(cached, str) else f"hub:{model}"


def portable_model(model: str) -> str:
    """How a record (an adapter's files, a manifest, an eval sample) names ``model``: as params name it,
    except a fold, a folder in the local cache, which is named ``fold:<key>`` after what it holds."""
    path = Path(model)
    try:
        record = path / FOLD_RECORD
        if record.is_file():
            return f"fold:{json.loads(record.read_text())['key']}"
    except (OSError, ValueError, KeyError):  # not a readable fold: keep the name
        pass
    return model


def adapter_identity(adapter: Adapter) -> dict[str, Any]:
    missing = [name for name in ADAPTER_FILES if not (adapter.path / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{adapter.path}: not a saved LoRA adapter (missing {', '.join(missing)}); run its training stage"
        )
    return {
        "files": {name: file_sha256(adapter.path / name) for name in ADAPTER_FILES},
        "weight": adapter.weight,
    }


def fold_key(base: str, adapters: Sequence[Adapter], dtype: str, cache: Path | None = None) -> str:
    """The fold's content key: the same in every checkout of a project, different whenever the base
    model, an adapter's files, a weight, the dtype or the folding procedure differ."""
    identity = {
        "format": FOLD_FORMAT,
        "base": model_identity(base, cache),
        "adapters": [adapter_identity(adapter) for adapter in adapters],
        "dtype": dtype,
    }
    return hashlib.sha256(canonical_json(identity).encode()).hexdigest()


def apply_adapters(model: PreTrainedModel, adapters: Sequence[Adapter]) -> PreTrainedModel:
    """``model`` with each adapter's update (times its weight) added to the weights, in order."""
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    for adapter in adapters:
        peft_model = PeftModel.from_pretrained(model, str(adapter.path))
        if adapter.weight != 1.0:
            for module in peft_model.modules():
                if isinstance(module, LoraLayer):
                    module.set_scale("default", adapter.weight)
        model = peft_model.merge_and_unload()
    return model


def fold(base: str, adapters: Sequence[Adapter], dtype: str = "auto", cache: Path | None = None) -> Path:
    """The folder of ``base`` with ``adapters`` folded in (built once, then served from the cache).

    The folding itself runs in a fresh interpreter: it runs torch, and a distilabel pipeline forked
    later from a process that has run torch hangs on its first batch (measured with introspect), so no
    stage may fold in its own process before generating.
    """
    from charforge.generators.llm import cache_dir

    cache = cache or cache_dir()
    key = fold_key(base, adapters, dtype, cache)
    target = cache / "folded" / key[:32]
    if (target / FOLD_RECORD).is_file():
        return target
    request = {
        "base": base,
        "adapters": [{"path": str(adapter.path), "weight": adapter.weight} for adapter in adapters],
        "dtype": dtype,
        "target": str(target),
        "key": key,
    }
    result = subprocess.run(
        [sys.executable, "-m", "charforge.train.fold", json.dumps(request)], capture_output=True, text=True
    )
    if result.returncode != 0 or not (target / FOLD_RECORD).is_file():
        tail = "\n".join(result.stderr.strip().splitlines()[-5:]) or "no output"
        raise FoldError(f"folding {len(adapters)} adapter(s) into {base} failed:\n{tail}")
    return target


def write_fold(base: str, adapters: Sequence[Adapter], dtype: str, target: Path, key: str) -> None:
    """Fold in this process and write the folder atomically (what ``fold``'s subprocess runs)."""
    from transformers import AutoTokenizer

    model = apply_adapters(load_causal_lm(base, dtype), adapters)
    tokenizer = AutoTokenizer.from_pretrained(base)
    with atomic_dir(target) as temp:
        model.save_pretrained(temp)
        tokenizer.save_pretrained(temp)
        record = {
            "key": key,
            "base": base,
            "adapters": [{"path": str(adapter.path), **adapter_identity(adapter)} for adapter in adapters],
            "dtype": dtype,
        }
        # Written last inside the folder: its presence marks a complete fold.
        (temp / FOLD_RECORD).write_text(json.dumps(record, indent=2) + "\n")


class FoldError(RuntimeError):
    pass


if __name__ == "__main__":
    from charforge.offline import apply_offline_env

    apply_offline_env()
    request = json.loads(sys.argv[1])
    write_fold(
        request["base"],
        [Adapter(Path(a["path"]), a["weight"]) for a in request["adapters"]],
        request["dtype"],
        Path(request["target"]),
        request["key"],
    )
