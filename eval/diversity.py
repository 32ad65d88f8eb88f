"""Diversity metrics for a prompt corpus: does the H1 "diversity level" knob change diversity
(docs/design.md §1)?

The figures follow Shaib et al. 2024 (arXiv 2403.00553), who compare text-diversity scores on English
corpora: gzip compression captures what slower n-gram overlap scores measure, and compression ratio,
self-repetition of long n-grams and Self-BLEU (plus BERTScore homogenisation in their first version)
have low mutual correlation, so together they suffice to report. Here: compression ratio and Self-BLEU,
with the Vendi score as the semantic figure (self-repetition is not computed). Each is computed for the
whole corpus and for each trait on its own. H1 varies the *contexts* a fixed trait is asked about, so
the headline is the unweighted mean over traits (``per_trait_mean``); ``overall`` also counts the
differences between traits and is reported beside it.

- **Compression ratio** (lexical redundancy, higher = *less* diverse): the UTF-8 size of the texts
  joined by one space over the size of ``gzip.compress`` of the same bytes (compresslevel 9,
  ``mtime=0``, so the figure is deterministic). It grows as texts repeat one another; a few short
  texts score below 1 (gzip adds 18 bytes of header and trailer).
- **Self-BLEU** (n-gram overlap, higher = *less* diverse): for each text of a sample, sentence BLEU
  (``sacrebleu`` defaults: 13a tokenizer, exponential smoothing, effective order, 0–100) with all
  *other* texts of the sample as references; the mean. It is quadratic in the sample, so it is taken
  on a seeded sample of at most ``SELF_BLEU_MAX_TEXTS`` texts per group (``SELF_BLEU_SEED``, the same
  for every variant: every level is measured the same way). None below 2 texts.
- **Vendi score** (Friedman & Dieng 2023), order 1, the semantic metric: ``exp(-Σ λ log λ)`` over the
  eigenvalues ``λ`` of ``K / n``, ``K`` the cosine-similarity kernel of the embeddings. It reads as an
  effective number of distinct prompts: 1 for ``n`` copies of one prompt, ``k`` for ``k`` mutually
  orthogonal ones.
- **Mean pairwise cosine distance** of the embeddings: the mean of ``1 - cos(e_i, e_j)`` over all
  unordered pairs ``i < j`` (0 for copies of one prompt; slightly above 1 is possible for unrelated
  texts, whose cosines scatter around 0). Kept beside Vendi because the bench history uses it.

Embeddings come from the shipped all-MiniLM-L6-v2 (``charforge.eval.embedding``, offline; the sha256
of its weights is recorded in every report).

Caveats:
    Every figure depends on how many texts it is taken over: compression ratio grows with the corpus
    (more text gives gzip more to reuse), Self-BLEU with the sample (more references, more chances of
    an n-gram match) and Vendi with ``n``. Compare levels at equal corpus size and equal per-trait size,
    as H1 does. Compression ratio and Self-BLEU are lexical: paraphrases of one request can score as
    diverse on them and not on the embedding figures.

References:
    - Shaib et al., "Standardizing the Measurement of Text Diversity: A Tool and a Comparative
      Analysis of Scores" (2024), arXiv 2403.00553, and their ``diversity`` package.
    - Zhu et al., "Texygen: A Benchmarking Platform for Text Generation Models" (2018): Self-BLEU.
    - Post, "A Call for Clarity in Reporting BLEU Scores" (2018): ``sacrebleu``.
    - Friedman & Dieng, "The Vendi Score: A Diversity Evaluation Metric for Machine Learning" (2023).
    - Reimers & Gurevych, "Sentence-BERT" (2019); the all-MiniLM-L6-v2 model card.

Examples:
    ```python
    from charforge.eval.diversity import diversity_report

    report = diversity_report(
        ["My landlord won't fix the heating.", "Can you help me plan a birthday party?"],
        trait_ids=["warmth", "warmth"],
    )
    report["per_trait_mean"]["self_bleu"]
    ```
"""

from __future__ import annotations

import copy
import gzip
import math
import random
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import sacrebleu
from sacrebleu.metrics import BLEU

from charforge.eval.embedding import DEFAULT_BATCH_SIZE, MODEL_NAME, SentenceEncoder, load_encoder

if TYPE_CHECKING:
    from charforge.schemas.prompts import PromptRecord

GZIP_LEVEL = 9
SELF_BLEU_MAX_TEXTS = 100  # Self-BLEU is quadratic: 100 texts take well under a second on one CPU core
SELF_BLEU_SEED = 0  # fixed, not the variant's seed, so every level and seed is sampled the same way
REPORT_VERSION = 2

DEFINITIONS: dict[str, Any] = {
    "compression_ratio": {
        "formula": "len(b) / len(gzip.compress(b, compresslevel=9, mtime=0)), b = ' '.join(texts) in UTF-8",
        "direction": "higher = more redundant (less diverse)",
        "reference": "Shaib et al. 2024 (arXiv 2403.00553); their `diversity` package reads ~34 bytes "
        "lower on small corpora (it measures a gzip file wrapped around the gzip bytes)",
    },
    "self_bleu": {
        "formula": "mean over the sampled texts of sentence BLEU against every other sampled text",
        "references": "all other sampled texts at once (multi-reference), not pairwise",
        "comparable_with": "charforge corpora measured the same way; not Texygen's NLTK or Shaib et al.'s "
        "pairwise Hugging Face bleu figures",
        "direction": "higher = more n-gram overlap (less diverse)",
        "scale": "0-100",
        "implementation": f"sacrebleu {sacrebleu.__version__} sentence_bleu defaults",
        "tokenize": "13a",
        "smooth_method": "exp",
        "use_effective_order": True,
        "lowercase": False,
        "sample_max_texts": SELF_BLEU_MAX_TEXTS,
        "sample_seed": SELF_BLEU_SEED,
        "sampler": "the group's texts if n <= max_texts, else "
        "sorted(random.Random(seed).sample(range(n), max_texts))",
        "undefined_below_n": 2,
    },
    "vendi_score": {
        "formula": "exp(-sum(l * ln l)) over the eigenvalues l of K/n",
        "kernel": "cosine similarity of L2-normalised embeddings",
        "embedding": MODEL_NAME,
        "order_q": 1,
        "log_base": "e",
    },
    "mean_pairwise_cosine_distance": {
        "formula": "mean over unordered pairs i<j of 1 - cos(e_i, e_j)",
        "embedding": MODEL_NAME,
        "undefined_below_n": 2,
    },
    "per_trait_mean": "unweighted mean over traits of each per-trait figure (undefined ones skipped)",
}


# --------------------------------------------------------------------------------------------------
# Metrics (pure functions)
# --------------------------------------------------------------------------------------------------


def compression_ratio(texts: Sequence[str]) -> float:
    """Gzip compression ratio of the texts joined by one space: ``len(b) / len(gzip(b))``.

    ``b`` is the UTF-8 encoding of ``" ".join(texts)``, compressed with ``gzip.compress`` at
    compresslevel 9 and ``mtime=0`` (the header then holds no timestamp, so equal texts give equal
    figures). Higher means more redundant. A few short texts score below 1: gzip adds 18 bytes of
    header and trailer.

    Shaib et al.'s ``diversity`` package (``compression_ratio(texts, "gzip")``) joins and encodes the
    same way, but measures the size of a ``gzip.GzipFile("compressed.gz")`` into which it writes the
    gzip bytes once more: a second container around them that adds a roughly constant ~34 bytes. Its
    README example (three "I enjoy walking with my cute dog…" texts, 558 bytes) reads 1.641 = 558/340;
    the plain ratio here is 558/306 = 1.8235. The difference vanishes for corpora of many KB.

    gzip finds repeats within a 32 KB window only: a group larger than that (a whole full-profile
    corpus, ``overall``) is measured on neighbouring texts, in the corpus's order (sorted by id). The
    per-trait figures, the H1 headline, stay under it up to ~100 prompts of ~300 characters.

    Raises:
        ValueError: no texts.
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not one string")
    if len(texts) == 0:
        raise ValueError("compression ratio needs at least one text")
    data = " ".join(texts).encode("utf-8")
    return len(data) / len(gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0))


def self_bleu_sample(n: int, max_texts: int = SELF_BLEU_MAX_TEXTS, seed: int = SELF_BLEU_SEED) -> list[int]:
    """The indices (ascending) of the texts Self-BLEU is taken over: all of them up to ``max_texts``,
    else a ``random.Random(seed)`` sample of ``max_texts``."""
    if max_texts < 2:
        raise ValueError(f"a Self-BLEU sample needs at least 2 texts, got max_texts={max_texts}")
    if n <= max_texts:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), max_texts))


def self_bleu(
    texts: Sequence[str], max_texts: int = SELF_BLEU_MAX_TEXTS, seed: int = SELF_BLEU_SEED
) -> float | None:
    """Self-BLEU (Zhu et al. 2018) on a seeded sample: the mean, over the sampled texts, of each text's
    sentence BLEU against all other sampled texts as references. None for fewer than 2 texts.

    BLEU is ``sacrebleu``'s ``sentence_bleu`` with its defaults (13a tokenizer, case kept, exponential
    smoothing, effective order), on its 0–100 scale: 100 for copies of one text, near 0 for texts that
    share no n-grams. The sample (``self_bleu_sample``) keeps the cost at ``max_texts²`` reference
    sentences whatever the corpus size.

    The figure is this variant's, not a universal Self-BLEU: Texygen (Zhu et al.) uses NLTK's sentence
    BLEU with smoothing method 1 on 0–1, and Shaib et al.'s package averages pairwise (one reference)
    Hugging Face ``bleu`` scores without smoothing. Multi-reference BLEU with smoothing reads higher than
    either; compare Self-BLEU across charforge corpora (the levels of H1), not with published numbers.
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not one string")
    sample = [texts[index] for index in self_bleu_sample(len(texts), max_texts, seed)]
    if len(sample) < 2:
        return None
    # the settings sacrebleu.sentence_bleu uses, built once rather than once per sentence
    bleu = BLEU(smooth_method="exp", tokenize="13a", lowercase=False, effective_order=True)
    scores = [
        bleu.sentence_score(text, sample[:index] + sample[index + 1 :]).score
        for index, text in enumerate(sample)
    ]
    return float(np.mean(scores))


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


def _exp_entropy(eigenvalues: np.ndarray) -> float:
    # Eigenvalues at rounding level (and the tiny negatives eigvalsh returns for a singular K) carry no
    # mass: 0 · log 0 = 0. Unlike the reference, which keeps every eigenvalue above 0, this cuts at
    # 1e-12; the terms it drops are below 3e-11 each.
    kept = eigenvalues[eigenvalues > 1e-12]
    return float(math.exp(-(kept * np.log(kept)).sum()))


def vendi_score_kernel(kernel: np.ndarray | Sequence[Sequence[float]]) -> float:
    """Vendi score (order 1) of a similarity kernel matrix: ``exp`` of the Shannon entropy of eig(K/n).

    The reference implementation's ``vendi.score_K(K)`` (vendi-score 0.0.3, github.com/vertaix/
    Vendi-Score), re-implemented rather than depended on: the package ships only an sdist and needs
    scikit-learn for one normalisation call. ``K`` must be symmetric positive semi-definite with
    ``K[i, i] = 1`` (``k(x, x) = 1``, the paper's condition, so that the eigenvalues of ``K / n`` sum to
    1); the score then lies between 1 (all items alike) and ``n`` (all mutually dissimilar).

    Raises:
        ValueError: ``K`` is empty, not square, not symmetric, or has a diagonal entry other than 1.
    """
    matrix = np.asarray(kernel, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] == 0 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"expected a non-empty square kernel matrix, got shape {matrix.shape}")
    if not np.allclose(matrix, matrix.T, atol=1e-8):
        raise ValueError("the kernel matrix is not symmetric")
    if not np.allclose(np.diag(matrix), 1.0, atol=1e-6):
        raise ValueError("the kernel's diagonal must be 1 (k(x, x) = 1); normalise the kernel first")
    return _exp_entropy(np.linalg.eigvalsh(matrix / matrix.shape[0]))


def vendi_score(embeddings: np.ndarray) -> float:
    """Vendi score (order 1) with the cosine kernel of the embeddings: ``vendi_score_kernel(X Xᵀ)``.

    ``K = X Xᵀ`` for the unit rows ``X``; its non-zero eigenvalues equal those of ``Xᵀ X``, so once
    ``n`` exceeds the embedding width the d×d matrix ``Xᵀ X / n`` is decomposed instead of the n×n
    kernel (the same figure, in O(n·d²) time and O(d²) memory).
    """
    unit = _unit_rows(embeddings)
    n, d = unit.shape
    if n <= d:
        return vendi_score_kernel(unit @ unit.T)
    return _exp_entropy(np.linalg.eigvalsh(unit.T @ unit / n))


# --------------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------------

_METRIC_KEYS = (
    "compression_ratio",
    "self_bleu",
    "self_bleu_sample_size",
    "vendi_score",
    "mean_pairwise_cosine_distance",
)


def _group_metrics(texts: Sequence[str], embeddings: np.ndarray) -> dict[str, Any]:
    return {
        "n_prompts": len(texts),
        "compression_ratio": compression_ratio(texts),
        "self_bleu": self_bleu(texts),
        "self_bleu_sample_size": min(len(texts), SELF_BLEU_MAX_TEXTS),
        "vendi_score": vendi_score(embeddings),
        "mean_pairwise_cosine_distance": mean_pairwise_cosine_distance(embeddings),
    }


def _mean_over_traits(per_trait: dict[str, dict[str, Any]]) -> dict[str, Any]:
    means: dict[str, Any] = {"n_traits": len(per_trait)}
    for key in ("n_prompts", *_METRIC_KEYS):
        values = [figures[key] for figures in per_trait.values() if figures[key] is not None]
        means[key] = float(np.mean(values)) if values else None
    return means


def _check_inputs(texts: Sequence[str], trait_ids: Sequence[str] | None) -> None:
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of prompt strings, not one string")
    if len(texts) == 0:
        raise ValueError("diversity_report needs at least one prompt text; got an empty corpus")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{index}] is {type(text).__name__}, expected str")
        if not text.strip():
            raise ValueError(f"texts[{index}] is blank; a prompt corpus should hold no empty prompts")
    if trait_ids is None:
        return
    if isinstance(trait_ids, str):
        raise TypeError("trait_ids must be a sequence of labels, not one string")
    if len(trait_ids) != len(texts):
        raise ValueError(f"trait_ids has {len(trait_ids)} labels for {len(texts)} texts")
    for index, label in enumerate(trait_ids):
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"trait_ids[{index}] must be a non-blank string, got {label!r}")


def diversity_report(
    texts: Sequence[str],
    trait_ids: Sequence[str] | None = None,
    *,
    encoder: SentenceEncoder | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> dict[str, Any]:
    """Diversity figures for a prompt corpus, overall and per trait, as a JSON-ready dict.

    Every text is embedded once; per-trait figures reuse the same embeddings.

    Args:
        texts: the prompt texts (one string per prompt).
        trait_ids: a trait id per text; enables the per-trait figures and their mean (the headline).
        encoder: the embedding model; ``load_encoder()`` (cached per process) when None.
        batch_size: texts per forward pass.

    Returns:
        ``report_version``, ``n_prompts``, ``n_traits``, ``headline`` (``"per_trait_mean"`` when trait
        ids are given, else ``"overall"``), ``embedding`` (model name, package version, weights file
        sha256, pooling…), ``definitions`` (each metric's parameters, the Self-BLEU sample's size and
        seed among them), ``overall`` (the figures for the whole corpus), ``per_trait``
        (``{trait_id: figures}``, None without trait ids) and ``per_trait_mean`` (unweighted mean over
        traits, None without trait ids). Figures are ``n_prompts``, ``compression_ratio``,
        ``self_bleu``, ``self_bleu_sample_size``, ``vendi_score`` and ``mean_pairwise_cosine_distance``;
        a figure that is undefined (Self-BLEU and cosine distance of one prompt) is None.

    Raises:
        ValueError: empty corpus, blank prompt or trait id, or a trait-id list of the wrong length.
        TypeError: a bare string where a sequence is expected, or a non-string text.
        EmbeddingModelError: the embedding model's package is not installed.
    """
    _check_inputs(texts, trait_ids)
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
        "overall": _group_metrics(texts, embeddings),
        "per_trait": None,
        "per_trait_mean": None,
    }
    if trait_ids is not None:
        groups: dict[str, list[int]] = {}
        for index, trait in enumerate(trait_ids):
            groups.setdefault(trait, []).append(index)
        per_trait = {
            trait: _group_metrics([texts[i] for i in indices], embeddings[indices])
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
    """``diversity_report`` on prompt records: texts from ``prompt_text``, grouped by ``trait_id``."""
    rows = list(records)
    return diversity_report(
        [prompt_text(record) for record in rows],
        trait_ids=[record.trait_id for record in rows],
        encoder=encoder,
        batch_size=batch_size,
    )
