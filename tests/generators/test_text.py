"""The shared text helpers: words and duplicate keys, a writer's text cleaned and checked for meta
openings, cut-off detection from a finish reason or a token count, trimming to a full sentence; and
each helper has one home (the stages and the evaluation import it from ``charforge.generators.text``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from charforge.generators import text
from charforge.generators.text import (
    META_RE,
    MIN_TRIMMED_CHARS,
    WRITER_SYSTEM,
    clean,
    collapse_whitespace,
    is_cut_off,
    joined_words,
    trim_to_sentence,
    words,
)

REPO = Path(__file__).resolve().parents[2]
# sha256 of the definitions the filters and duplicate keys rest on (see the test below)
DEFINITIONS_SHA256 = "ac347b90ef3b490549f975ea4f17d60bcb4a8cb11e31b66ecdef738aeadb7d0b"


def test_words_are_lowercase_runs_of_letters_digits_and_apostrophes() -> None:
    assert words("Don't PANIC — it's 9am!") == ["don't", "panic", "it's", "9am"]
    assert words("don’t") == ["don", "t"]  # a curly apostrophe separates words
    assert words("café naïve") == ["caf", "na", "ve"]  # letters outside a-z separate words too
    assert words("") == [] and words(" ... !? ") == []


def test_joined_words_ignores_case_punctuation_and_spacing() -> None:
    assert joined_words("  Hello,\tWORLD!\n") == "hello world"
    assert joined_words("My printer jammed again!") == joined_words("my printer  jammed, again")
    assert joined_words("my printer jammed") != joined_words("my printer jammed again")
    assert joined_words("") == "" and joined_words("?!") == ""


def test_collapse_whitespace_keeps_case_and_punctuation() -> None:
    assert collapse_whitespace("  Unplug\tit,\n\n then  wait.  ") == "Unplug it, then wait."
    assert collapse_whitespace("Unplug it.") != collapse_whitespace("unplug it.")
    assert collapse_whitespace("Unplug it.") != collapse_whitespace("Unplug it")
    assert collapse_whitespace("a\u00a0b") == "a b"  # any Unicode whitespace counts
    assert collapse_whitespace(" \n\t") == ""
    # lowercased first, it ignores case too (the EM questions' duplicate key)
    assert collapse_whitespace("Is IT safe?".lower()) == collapse_whitespace(" is it  safe?")


def test_clean_removes_outer_quotes_and_spaces() -> None:
    assert clean('  "How do I fix my bike?"  ') == "How do I fix my bike?"
    assert clean("'How do I fix my bike?'") == "How do I fix my bike?"
    assert clean("“How do I fix my bike?”") == "How do I fix my bike?"
    assert clean("“ How do I fix my bike?") == "How do I fix my bike?"  # an unmatched curly quote
    assert clean('He said "no" to me') == 'He said "no" to me'  # inner quotes stay
    assert clean('"') == '"' and clean('""') == "" and clean("   ") == ""


@pytest.mark.parametrize(
    "opening",
    [
        "Sure! Here is a message a user might send.",
        "  certainly, I can write that",
        "Of course.",
        "Here's one:",
        "As an AI, I cannot",
        "I'm sorry, but",
        "I cannot help with that",
        "Message: my kettle broke",
        "The rewritten message is: my kettle broke",
        "Your new user message: hi",
        "MY MESSAGE : hi",
    ],
)
def test_meta_openings_are_caught(opening: str) -> None:
    assert META_RE.match(opening)


@pytest.mark.parametrize(
    "message",
    [
        "My message to my landlord was ignored, what now?",
        "How do I say I'm sorry to a friend?",  # only an opening counts
        "Can you help me write a message: it's for my boss",
        "",
    ],
)
def test_user_messages_are_not_meta(message: str) -> None:
    assert not META_RE.match(message)


def test_trim_to_sentence_keeps_up_to_the_last_complete_sentence() -> None:
    cut = "My kettle broke again this morning. Can you help me pick a new one that lasts"
    assert trim_to_sentence(cut) == "My kettle broke again this morning."
    assert trim_to_sentence("It broke! Why? I asked them… and the") == "It broke! Why? I asked them…"
    # closing quotes and brackets belong to the sentence they close
    assert trim_to_sentence('She said "it broke again." Then she') == 'She said "it broke again."'
    assert trim_to_sentence("It broke (again, twice.) Then we") == "It broke (again, twice.)"
    assert trim_to_sentence("  Leading spaces are dropped. And the") == "Leading spaces are dropped."
    whole = "A whole answer, nothing cut."
    assert trim_to_sentence(whole) == whole


def test_trim_to_sentence_gives_none_when_nothing_worth_keeping_is_left() -> None:
    assert trim_to_sentence("") is None
    assert trim_to_sentence("no sentence end and cut off") is None
    # a stop inside a number or a word is no sentence end
    assert trim_to_sentence("The price went from 3.5 to 4.2 euros and") is None
    assert trim_to_sentence("See example.com for more of") is None
    short = "Too short. And then"  # "Too short." has 10 characters
    assert trim_to_sentence(short) is None
    exactly = "x" * (MIN_TRIMMED_CHARS - 1) + "."
    assert trim_to_sentence(exactly + " and") == exactly
    assert trim_to_sentence(exactly[1:] + " and") is None


@pytest.mark.parametrize(
    ("stats", "limit", "cut"),
    [
        ({"finish_reason": "length", "output_tokens": 3}, 48, True),  # the finish reason wins
        ({"finish_reason": "stop", "output_tokens": 48}, 48, False),
        ({"finish_reason": "stop", "output_tokens": 99}, 48, False),
        ({"finish_reason": "abort"}, 48, False),  # any reason but "length" is not a cut-off
        ({"output_tokens": 48}, 48, True),  # no reason (openai, llama.cpp): the exact count
        ({"output_tokens": 49}, 48, True),
        ({"output_tokens": 47}, 48, False),
        ({"finish_reason": None, "output_tokens": 48}, 48, True),  # an eval row: both keys, no reason
        ({"finish_reason": "", "output_tokens": 48}, 48, True),  # an empty reason is no reason
        ({"finish_reason": None, "output_tokens": None}, 48, False),  # a count missing counts as 0
        ({}, 48, False),  # a failed batch's empty statistics
        ({}, 0, True),  # ... against a limit of 0 tokens
    ],
)
def test_cut_off_comes_from_the_finish_reason_else_the_token_count(
    stats: dict[str, object], limit: int, cut: bool
) -> None:
    assert is_cut_off(stats, limit) is cut


def test_the_writers_share_one_system_prompt() -> None:
    from charforge.generators import em_data, prompts

    assert prompts.WRITER_SYSTEM is WRITER_SYSTEM
    chat = em_data.question_request("cooking", ["How long do I boil an egg?"])
    assert chat[0] == {"role": "system", "content": WRITER_SYSTEM}


def test_changing_a_definition_is_a_deliberate_act() -> None:
    # Corpora hash the same for the same params and seed only while these stay as they are: a change
    # here must come with regenerated corpora (and this digest updated).
    definitions = "\0".join(
        [
            WRITER_SYSTEM,
            META_RE.pattern,
            str(META_RE.flags),
            text.SENTENCE_END_RE.pattern,
            str(MIN_TRIMMED_CHARS),
            text.WORD_RE.pattern,
        ]
    )
    assert hashlib.sha256(definitions.encode()).hexdigest() == DEFINITIONS_SHA256


def test_the_word_pattern_has_one_home() -> None:
    pattern = "[a-z0-9']+"
    homes = [
        path.relative_to(REPO).as_posix()
        for folder in ("generators", "eval", "charforge", "schemas", "train")
        for path in sorted((REPO / folder).rglob("*.py"))
        if pattern in path.read_text(encoding="utf-8")
    ]
    assert homes == ["generators/text.py"]
