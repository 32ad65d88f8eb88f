"""Contamination: word n-gram overlap between a variant's training corpora and the eval prompts.

An eval question that overlaps the training data inflates effects. For every eval prompt (broad EM
questions, in-domain questions, held-out trait prompts) and every training row, the overlap is the
share of the prompt's word n-grams (lowercase words, ``n`` from params) that occur in the row; a
prompt shorter than ``n`` words is one n-gram of its own length, found anywhere in the row. The
corpora stream row by row against an index of the prompts' n-grams, so memory stays bounded by the
eval side.

Training corpora are every data file under ``corpora/build/<variant>/`` except the evaluation's own
output, plus ``eval.contamination.extra_corpora`` (e.g. the EM fine-tune's seed data). Text is every
string in a row except identifiers and provenance.

Input columns: any corpus (parquet or JSONL rows).

Output columns: none; ``contamination_report`` returns the metrics block (per corpus and the worst
overlaps).

Runtime parameters: ``eval.contamination`` (``ngram``, ``top``, ``extra_corpora``).
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from charforge.generators.text import words

SKIP_KEYS = frozenset(
    {"id", "variant", "provenance", "model", "rendered_prompt", "scores", "sample_id", "role"}
)


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


def corpus_rows(path: Path) -> Iterator[tuple[str, str]]:
    """(row id or line/row number, all text of the row) for a parquet or JSONL corpus."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        number = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                number += 1
                yield str(row.get("id") or f"row {number}"), "\n".join(_strings(row))
        return
    from charforge.io import SourceError, iter_jsonl_file

    for line, value in iter_jsonl_file(path):
        if isinstance(value, SourceError):
            continue  # an unreadable line has no text to compare; `charforge validate` reports it
        row_id = value.get("id") if isinstance(value, dict) else None
        yield str(row_id or f"line {line}"), "\n".join(_strings(value))


def training_corpora(build_dir: Path, extra: Sequence[Path]) -> list[Path]:
    """The variant's data files, without the evaluation's own outputs or manifests."""
    found = []
    if build_dir.is_dir():
        for path in sorted(build_dir.iterdir()):
            if path.suffix in {".parquet", ".jsonl"} and not path.name.startswith("eval-"):
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
