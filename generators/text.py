"""Text helpers shared by the generation stages and the evaluation: one home for each.

- Words: ``WORD_RE`` and ``words`` (the lowercased text's runs of a-z, 0-9 and apostrophes), for the
  prompts' duplicate keys, distillation's trait-statement overlap and the contamination n-grams. (The
  diversity metrics' Self-BLEU tokenises with sacrebleu's 13a tokenizer.)
- Duplicate keys, from loosest to strictest: ``joined_words`` (case, punctuation and spacing ignored:
  prompts) and ``collapse_whitespace`` (spacing ignored: distilled pairs, introspection and control
  answers; applied to ``text.lower()`` it ignores case too: EM questions).
- A writer's text: ``WRITER_SYSTEM`` (the system prompt of a model asked to write a user's message:
  prompts, EM questions), ``clean`` (outer quotes and spaces removed) and ``META_RE`` (an opening that
  shows the writer answered or commented instead).
- Cut-offs: ``is_cut_off`` (did generation stop at the token limit) and ``trim_to_sentence`` (a
  cut-off text up to its last complete sentence).

Any change here changes generated corpora (same params and seed, other rows): these are the filters'
and the duplicate checks' definitions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# The system prompt of a model asked to write a user's message (a prompt, an EM question).
WRITER_SYSTEM = (
    "You write realistic messages that people send to an AI assistant. Reply with the message only: "
    "no preamble, no quotation marks, no explanation, never an answer to the message."
)
# Openings that show the writer answered or commented instead of writing the user's message.
META_RE = re.compile(
    r"^\s*(sure|certainly|of course|here is|here's|as an ai|i'm sorry|i cannot|"
    r"(the |a |your |my )?(rewritten |new )?(user )?message( is)?\s*:)",
    re.I,
)
# A sentence ends at . ! ? or … (closing quotes and brackets included) before a space or the end.
SENTENCE_END_RE = re.compile(r"[.!?…][\"'”’)]*(?=\s|$)")
MIN_TRIMMED_CHARS = 20
# A word of lowercased text: letters a-z, digits and apostrophes (``don't`` is one word).
WORD_RE = re.compile(r"[a-z0-9']+")


def words(text: str) -> list[str]:
    """The lowercase words of ``text`` (``WORD_RE``): punctuation and other characters separate them."""
    return WORD_RE.findall(text.lower())


def joined_words(text: str) -> str:
    """``text``'s words joined by single spaces: two texts that differ only in case, punctuation or
    spacing give the same string (the prompts' exact-duplicate key and shingle source)."""
    return " ".join(words(text))


def shingles(text: str, size: int = 3) -> frozenset[tuple[str, ...]]:
    """Word ``size``-shingles of ``text`` (one shingle of its own length if shorter): the unit of the
    near-duplicate checks, which work offline and need no model."""
    tokens = words(text)
    if len(tokens) < size:
        return frozenset({tuple(tokens)})
    return frozenset(tuple(tokens[i : i + size]) for i in range(len(tokens) - size + 1))


def jaccard(a: frozenset[Any], b: frozenset[Any]) -> float:
    """|a ∩ b| / |a ∪ b|; 1.0 for two empty sets."""
    return len(a & b) / len(a | b) if a or b else 1.0


def collapse_whitespace(text: str) -> str:
    """``text`` with each run of whitespace as one space and none at the ends; case and punctuation
    kept (the key under which two answers count as identical)."""
    return " ".join(text.split())


def clean(text: str) -> str:
    """The writer's text as a user message: trimmed, outer quotes removed."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'“”":
        text = text[1:-1].strip()
    return text.strip("“”").strip()


def trim_to_sentence(text: str) -> str | None:
    """``text`` up to its last complete sentence, or None if no sentence of some length is left."""
    ends = list(SENTENCE_END_RE.finditer(text))
    if not ends:
        return None
    trimmed = text[: ends[-1].end()].strip()
    return trimmed if len(trimmed) >= MIN_TRIMMED_CHARS else None


def is_cut_off(stats: Mapping[str, Any], max_new_tokens: int) -> bool:
    """Generation stopped at the token limit: the backend's finish reason when it reports one
    (transformers, vllm); otherwise the exact token count servers return (openai, llamacpp) against
    the limit. ``stats``: a sample's distilabel statistics, or any row with those two keys."""
    finish = stats.get("finish_reason")
    if finish:
        return finish == "length"
    return (stats.get("output_tokens") or 0) >= max_new_tokens
