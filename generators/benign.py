"""Benign rows for the EM defences that train on them (``interleave``, ``kl``): general prompts answered
by the student itself, so the rows pull the EM model towards nothing but the student's own behaviour,
and every arm gets the same rows.

Prompt files (``defences.benign.prompts``, inside ``corpora/benign/``) are read in the formats their
authors publish: charforge's YAML (``prompts:``, a list of strings), or a JSON array, JSONL or parquet of rows
with ``prompt``, ``instruction`` (+ ``input``: Stanford Alpaca's ``alpaca_data.json`` and its
derivatives) or ``messages`` / ``conversations`` (the first user turn). A row with a non-empty
``output``-style answer keeps only its prompt: the student writes every answer.

Input columns: the prompt file. Output columns: ``id`` (``benign.<n>.s<sample>``), ``variant`` (``em``),
``messages`` (user, assistant), ``provenance``. Runtime parameters: ``defences.benign`` and the student.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charforge.generators.chat import GenerationRun, answer_chats, kept_samples, with_max_new_tokens
from charforge.generators.text import collapse_whitespace
from charforge.schemas.params import BenignConfig, ModelRole

PIPELINE = "benign-answers"
PROMPT_KEYS = ("prompt", "instruction", "question")


class BenignPromptsError(ValueError):
    """The benign prompt file is missing, unreadable or holds a row without a prompt."""


def _row_prompt(row: Any, where: str) -> str:
    """The prompt of one published row (see the module docstring)."""
    if isinstance(row, str):
        text = row
    elif isinstance(row, dict) and any(isinstance(row.get(key), str) for key in PROMPT_KEYS):
        key = next(key for key in PROMPT_KEYS if isinstance(row.get(key), str))
        text = row[key]
        if key == "instruction" and isinstance(row.get("input"), str) and row["input"].strip():
            text = f"{text}\n\n{row['input']}"  # Alpaca's instruction + its input, as its prompt joins them
    elif isinstance(row, dict) and isinstance(row.get("messages") or row.get("conversations"), list):
        turns = row.get("messages") or row.get("conversations")
        user = next(
            (
                turn.get("content", turn.get("value"))
                for turn in turns
                if isinstance(turn, dict) and turn.get("role", turn.get("from")) in ("user", "human")
            ),
            None,
        )
        if not isinstance(user, str):
            raise BenignPromptsError(f"{where}: messages: no user turn to take the prompt from")
        text = user
    else:
        raise BenignPromptsError(
            f"{where}: no prompt (a string, or a row with one of {', '.join(PROMPT_KEYS)} or messages)"
        )
    if not text.strip():
        raise BenignPromptsError(f"{where}: the prompt is empty")
    return text.strip()


def _rows(path: Path) -> Iterator[tuple[str, Any]]:
    from charforge.io import SourceError, detect_format, iter_jsonl_file, load_yaml, parse_json, read_text

    fmt = detect_format(path, text_as_json=True)
    if fmt == "parquet":  # the Hub's copy of Alpaca and most instruction datasets
        import polars as pl

        try:
            table = pl.read_parquet(path)
        except Exception as error:  # polars raises several types for a damaged file
            raise BenignPromptsError(f"{path}: unreadable parquet ({error})") from None
        for index, value in enumerate(table.iter_rows(named=True)):
            yield f"{path}: row {index + 1}", value
        return
    try:
        if fmt == "jsonl":
            for line, value in iter_jsonl_file(path):
                if isinstance(value, SourceError):
                    raise BenignPromptsError(f"{path}:{value.line or line}: {value.message}")
                yield f"{path}:{line}", value
            return
        text = read_text(path)
        if fmt == "yaml":
            document, _ = load_yaml(text)
            data = document.data
            listed = data.get("prompts") if isinstance(data, dict) else data
            if not isinstance(listed, list):
                raise BenignPromptsError(f"{path}: prompts: expected a list of prompts")
            for index, value in enumerate(listed):
                line = document.line_of(("prompts", index) if isinstance(data, dict) else (index,))
                yield f"{path}:{line or '-'}: prompts.{index}", value
            return
        data = parse_json(text)
    except SourceError as error:
        raise BenignPromptsError(f"{path}:{error.line or '-'}: {error.message}") from None
    if fmt != "json" or not isinstance(data, list):
        raise BenignPromptsError(
            f"{path}: expected YAML (`prompts:`), a JSON array of rows, JSONL or parquet"
        )
    for index, value in enumerate(data):
        yield f"{path}: row {index + 1}", value


def load_benign_prompts(path: Path) -> tuple[list[str], int]:
    """The file's prompts in file order, each once, and how many repeats were skipped (a prompt equal to
    an earlier one once whitespace is collapsed: it would be answered twice; public instruction sets
    hold some)."""
    if not path.is_file():
        raise BenignPromptsError(f"{path}: benign prompt file not found (defences.benign.prompts)")
    prompts, seen, repeated = [], set(), 0
    for where, row in _rows(path):
        text = _row_prompt(row, where)
        key = collapse_whitespace(text)
        if key in seen:
            repeated += 1
            continue
        seen.add(key)
        prompts.append(text)
    if not prompts:
        raise BenignPromptsError(f"{path}: no prompts")
    return prompts, repeated


@dataclass
class BenignCorpus:
    rows: list[dict[str, Any]] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)
    trimmed: int = 0
    answers: int = 0


def benign_corpus(
    prompts: list[str], config: BenignConfig, student: ModelRole, run: GenerationRun
) -> BenignCorpus:
    """``config.samples_per_prompt`` student answers to each prompt; an answer that cannot be trained on
    (failed, empty, cut off, too long, a repeat) is dropped and counted by reason."""
    role = with_max_new_tokens(student, config.max_new_tokens)
    recorded = run.recorded_as("charforge.generators.benign", {"student": role})
    chats = [[{"role": "user", "content": prompt}] for prompt in prompts]
    answered = answer_chats(
        chats, role, recorded, PIPELINE, samples=config.samples_per_prompt, trim_cut_off=config.trim_cut_off
    )
    result = BenignCorpus()
    for prompt, samples in zip(prompts, answered, strict=True):
        result.answers += len(samples)
        digest = hashlib.sha256(prompt.encode()).hexdigest()[:12]  # the id follows the prompt, not its line
        for index, answer in kept_samples(samples, config.max_answer_chars, result.rejected, "answer"):
            result.trimmed += answer.trimmed
            result.rows.append(
                {
                    "id": f"benign.{digest}.s{index}",
                    "variant": run.variant,
                    "messages": [
                        {"role": "user", "content": prompt},
                        {"role": "assistant", "content": answer.text},
                    ],
                    "provenance": json.loads(json.dumps(recorded.provenance, default=str)),
                }
            )
    return result
