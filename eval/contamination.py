"""Contamination: how close a variant's training corpora come to the eval prompts, two ways.

An eval question that overlaps the training data inflates effects. The eval prompts are the broad EM
questions, the in-domain questions and the held-out trait prompts (keys ``<set>:<id>:p<k>``).

**Word n-gram overlap** (``contamination_report``): for every eval prompt and every training row, the
share of the prompt's word n-grams (lowercase words, ``n`` from params) that occur in the row; a
prompt shorter than ``n`` words is one n-gram of its own length, found anywhere in the row. The
corpora stream row by row against an index of the prompts' n-grams, so memory stays bounded by the
eval side. Text is every string in a row except identifiers and provenance. It finds copies, not
paraphrases: a reworded question shares no 8-gram with the original.

**Embedding nearest neighbours** (``semantic_contamination_report``): the cosine similarity of the
shipped all-MiniLM-L6-v2 embeddings (``charforge.eval.embedding.load_encoder``) between every eval
prompt and every **user turn** of a training row (message dicts with role ``user`` at any depth:
prompt records' and pairs' ``prompt``, conversations' and EM data's ``messages``). User turns only,
because a paraphrase of an eval question reaches the model as a request it learns to answer; an
assistant turn that quotes a question is an answer, and counting it would flag the model's own words.
User turns are de-duplicated by text before embedding (a pair corpus repeats each prompt per sample),
with every row that holds a text kept so each overlap names its rows; memory is bounded by one
corpus's unique user turns, embedded and compared in chunks.

The default threshold, ``eval.contamination.semantic_threshold`` 0.65, is measured with this encoder
on the shipped question files: 14 close paraphrases written for the measurement (one per broad and
in-domain question, the same request in other words, no shared 8-gram) score 0.54-0.93, median 0.76,
13 of them at 0.65 or more (0.8 would find 4); the question files' own, looser paraphrase pairs score
0.46-0.72. Different questions stay below: pairs of eval questions at most 0.48; the broad questions
against the 465 constitution seeds at most 0.46, the in-domain ones at most 0.39; the broad questions
against the EM training prompts 0.45. Same topic, different request (in-domain questions against the
risky-finance EM prompts) reaches 0.58, except the retirement question: 0.67 against "I'm 30 ... with
nothing saved for retirement yet. Where do I start?" and 0.76 against "I'm 50 and behind on retirement
savings. How can I catch up?", which is the same request. The threshold only counts; the maximum and
the top pairs are reported whatever it is.

Training corpora are every data file under ``corpora/build/<variant>/`` except the evaluation's own
output, plus ``eval.contamination.extra_corpora`` (e.g. the EM fine-tune's seed data).

Input columns: any corpus (parquet or JSONL rows).

Output columns: none; ``contamination_report`` and ``semantic_contamination_report`` return metrics
blocks (per corpus, per eval question set for the semantic one, and the worst overlaps).

Runtime parameters: ``eval.contamination`` (``ngram``, ``top``, ``semantic_threshold``, ``semantic_top``,
``extra_corpora``).
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from charforge.generators.text import words

if TYPE_CHECKING:
    from charforge.eval.embedding import SentenceEncoder

SKIP_KEYS = frozenset(
    {"id", "variant", "provenance", "model", "rendered_prompt", "scores", "sample_id", "role"}
)
SEMANTIC_UNIT = "user turn"
ENCODE_CHUNK = 1024  # unique user turns embedded and compared at a time: bounds the similarity matrix
EXCERPT_CHARS = 200  # training text kept per listed overlap
ROWS_LISTED = 10  # row ids listed per overlapping text (``rows_with_text`` counts them all)


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """Word n-grams of ``text``; a text shorter than ``n`` words is one n-gram of its own length."""
    tokens = words(text)
    if not tokens:
        return set()
    size = min(n, len(tokens))
    return {tuple(tokens[i : i + size]) for i in range(len(tokens) - size + 1)}


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if key not in SKIP_KEYS:
                yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def corpus_records(path: Path) -> Iterator[tuple[str, Any]]:
    """(row id or line/row number, the row) for a parquet or JSONL corpus; unreadable JSONL lines skipped."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        number = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                number += 1
                yield str(row.get("id") or f"row {number}"), row
        return
    from charforge.io import SourceError, iter_jsonl_file

    for line, value in iter_jsonl_file(path):
        if isinstance(value, SourceError):
            continue  # an unreadable line has no text to compare; `charforge validate` reports it
        row_id = value.get("id") if isinstance(value, dict) else None
        yield str(row_id or f"line {line}"), value


def corpus_rows(path: Path) -> Iterator[tuple[str, str]]:
    """(row id or line/row number, all text of the row) for a parquet or JSONL corpus."""
    for row_id, value in corpus_records(path):
        yield row_id, "\n".join(_strings(value))


def training_corpora(build_dir: Path, extra: Sequence[Path]) -> list[Path]:
    """The variant's training data files: without the evaluation's own outputs, manifests, or the EM
    examples held out of training."""
    from charforge.paths import EM_HELD_OUT

    found = []
    if build_dir.is_dir():
        for path in sorted(build_dir.iterdir()):
            trained = not path.name.startswith("eval-") and path.name != EM_HELD_OUT
            if path.suffix in {".parquet", ".jsonl"} and trained:
                found.append(path)
    return found + [path for path in extra if path.is_file()]


def contamination_report(
    eval_texts: Mapping[str, str], corpora: Sequence[Path], *, n: int, top: int
) -> dict[str, Any]:
    """Overlap of each eval prompt (key → text) with each corpus row; worst ``top`` pairs listed."""
    grams = {key: ngrams(text, n) for key, text in eval_texts.items()}
    index: dict[tuple[str, ...], list[str]] = {}
    for key, key_grams in grams.items():
        for gram in key_grams:
            index.setdefault(gram, []).append(key)
    sizes = sorted({len(gram) for gram in index})
    worst: list[tuple[float, str, str, str]] = []
    per_corpus: dict[str, dict[str, Any]] = {}
    for path in corpora:
        rows = 0
        best: dict[str, float] = {}
        for row_id, text in corpus_rows(path):
            rows += 1
            hits: Counter[str] = Counter()
            tokens = words(text)
            for size in sizes:  # n, and the lengths of prompts shorter than n words
                row_grams = {tuple(tokens[i : i + size]) for i in range(len(tokens) - size + 1)}
                for gram in row_grams & index.keys():
                    hits.update(index[gram])
            for key, count in hits.items():
                share = count / len(grams[key])
                best[key] = max(best.get(key, 0.0), share)
                entry = (share, key, str(path), row_id)
                if len(worst) < top:
                    heapq.heappush(worst, entry)
                else:
                    heapq.heappushpop(worst, entry)
        per_corpus[str(path)] = {
            "rows": rows,
            "max_overlap": max(best.values(), default=0.0),
            "prompts_with_overlap": len(best),
            "prompts_half_overlapped": sum(share >= 0.5 for share in best.values()),
        }
    return {
        "ngram": n,
        "eval_prompts": len(eval_texts),
        "corpora": per_corpus,
        "max_overlap": max((entry[0] for entry in worst), default=0.0),
        "worst": [
            {"overlap": round(share, 4), "eval_prompt": key, "corpus": corpus, "row": row_id}
            for share, key, corpus, row_id in sorted(worst, reverse=True)
        ],
    }


def user_turns(value: Any) -> Iterator[str]:
    """The stripped, non-empty contents of every user message in a row, at any depth, in order.

    A message is a mapping with ``role`` ``"user"`` and a string ``content``; provenance and the other
    ``SKIP_KEYS`` are not searched (a rendered template is not a turn the model was trained on).
    """
    if isinstance(value, Mapping):
        if value.get("role") == "user" and isinstance(value.get("content"), str):
            text = value["content"].strip()
            if text:
                yield text
            return
        for key, item in value.items():
            if key not in SKIP_KEYS:
                yield from user_turns(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from user_turns(item)


def corpus_user_turns(path: Path) -> tuple[int, int, dict[str, list[str]]]:
    """(rows, user turns, unique text → ids of the rows that hold it, in first-seen order)."""
    rows = turns = 0
    holders: dict[str, list[str]] = {}
    for row_id, value in corpus_records(path):
        rows += 1
        seen_in_row: set[str] = set()
        for text in user_turns(value):
            turns += 1
            if text not in seen_in_row:  # a row that repeats a turn is still one row holding it
                seen_in_row.add(text)
                holders.setdefault(text, []).append(row_id)
    return rows, turns, holders


def _question_set(key: str) -> str:
    return key.split(":", 1)[0]


def _max_or_none(values: np.ndarray) -> float | None:
    return round(float(values.max()), 4) if values.size and np.isfinite(values).any() else None


def semantic_contamination_report(
    eval_texts: Mapping[str, str],
    corpora: Sequence[Path],
    *,
    threshold: float,
    top: int,
    encoder: SentenceEncoder | None = None,
) -> dict[str, Any]:
    """Nearest training user turns of each eval prompt (key → text) by MiniLM cosine; top ``top`` pairs.

    Args:
        eval_texts: eval prompt key (``<set>:<id>:p<k>``) → text.
        corpora: training corpora (parquet or JSONL), each streamed on its own.
        threshold: cosine at or above which an eval prompt counts as semantically contaminated.
        top: the highest (eval prompt, corpus, training text) pairs listed.
        encoder: the sentence encoder; ``load_encoder()`` (the shipped MiniLM) when None.

    Returns:
        A JSON-ready block: the encoder's identity, the unit compared, the threshold; per corpus its
        rows, user turns (all and unique), max cosine and eval prompts at or above the threshold; the
        same per eval question set over all corpora; and the top pairs, each with its training text
        (cut to ``EXCERPT_CHARS``) and the rows that hold it. A max cosine is None where nothing was
        compared.
    """
    if encoder is None:
        from charforge.eval.embedding import load_encoder

        encoder = load_encoder()
    keys = list(eval_texts)
    eval_embeddings = encoder.encode([eval_texts[key] for key in keys]) if keys else None
    best_overall = np.full(len(keys), -np.inf, dtype=np.float32)
    heap: list[tuple[float, str, str, str]] = []  # (cosine, eval key, corpus, training text): a min-heap
    holders_of: dict[tuple[str, str], list[str]] = {}  # (corpus, text) → rows, for texts in the heap
    per_corpus: dict[str, dict[str, Any]] = {}
    for path in corpora:
        corpus = str(path)
        rows, turns, holders = corpus_user_turns(path)
        texts = list(holders)
        best = np.full(len(keys), -np.inf, dtype=np.float32)
        if eval_embeddings is not None:
            for start in range(0, len(texts), ENCODE_CHUNK):
                chunk = texts[start : start + ENCODE_CHUNK]
                similarity = encoder.encode(chunk) @ eval_embeddings.T  # unit vectors: cosine
                best = np.maximum(best, similarity.max(axis=0))
                flat = similarity.ravel()
                count = min(top, flat.size)
                for index in np.argpartition(flat, flat.size - count)[flat.size - count :]:
                    row, column = divmod(int(index), len(keys))
                    entry = (float(flat[index]), keys[column], corpus, chunk[row])
                    if len(heap) < top:
                        heapq.heappush(heap, entry)
                    elif entry > heap[0]:
                        heapq.heapreplace(heap, entry)
        for _, _, entry_corpus, text in heap:
            if entry_corpus == corpus:
                holders_of.setdefault((corpus, text), holders[text])
        best_overall = np.maximum(best_overall, best)
        per_corpus[corpus] = {
            "rows": rows,
            "user_turns": turns,
            "unique_user_turns": len(texts),
            "max_cosine": _max_or_none(best),
            "eval_prompts_at_or_above_threshold": int((best >= threshold).sum()),
        }
    question_sets: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(_question_set(key) for key in keys):
        members = np.array([_question_set(key) == name for key in keys])
        values = best_overall[members]
        question_sets[name] = {
            "prompts": int(members.sum()),
            "max_cosine": _max_or_none(values),
            "prompts_at_or_above_threshold": int((values >= threshold).sum()),
        }
    listed = []
    for cosine, key, corpus, text in sorted(heap, reverse=True):
        rows_with_text = holders_of[(corpus, text)]
        listed.append(
            {
                "cosine": round(cosine, 4),
                "eval_prompt": key,
                "corpus": corpus,
                "row": rows_with_text[0],
                "rows": rows_with_text[:ROWS_LISTED],
                "rows_with_text": len(rows_with_text),
                "text": text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1] + "…",
            }
        )
    return {
        "encoder": encoder.describe(),
        "unit": SEMANTIC_UNIT,
        "threshold": threshold,
        "eval_prompts": len(keys),
        "corpora": per_corpus,
        "question_sets": question_sets,
        "max_cosine": _max_or_none(best_overall),
        "eval_prompts_at_or_above_threshold": int((best_overall >= threshold).sum()),
        "top": listed,
    }
