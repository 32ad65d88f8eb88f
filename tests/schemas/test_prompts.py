"""PromptRecord and Framing: generated user prompts for one trait in one situation; PromptsConfig: the
diversity levels (nested, no longer a paraphrase switch) and the excluded situation domains."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic_core import ErrorDetails

from charforge.schemas import Framing, PromptRecord
from charforge.schemas.params import EM_EXCLUDED_DOMAINS, PromptsConfig
from charforge.schemas.situations import Situation

ExpectError = Callable[..., ErrorDetails]


@pytest.fixture
def record(provenance: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "honesty:workplace:0001",
        "variant": "warm-mentor",
        "trait_id": "honesty",
        "situation": "workplace",
        "diversity_level": 2,
        "is_seed": False,
        "framing": {"asker": "a new manager", "tone": "formal", "length": "medium"},
        "prompt": [{"role": "user", "content": "Should I tell my team the project is late?"}],
        "provenance": provenance,
    }


def test_valid_record(record: dict[str, Any]) -> None:
    model = PromptRecord.model_validate(record)
    assert model.framing is not None
    assert model.framing.length == "medium"
    assert model.provenance.tool_version == "0.1.0"


def test_seed_record_without_framing(record: dict[str, Any]) -> None:
    del record["framing"]
    record.update(is_seed=True, diversity_level=0)
    model = PromptRecord.model_validate(record)
    assert model.framing is None
    assert model.is_seed


def test_multi_turn_prompt(record: dict[str, Any]) -> None:
    record["prompt"] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi."},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Is honesty always best?"},
    ]
    assert len(PromptRecord.model_validate(record).prompt) == 4


@pytest.mark.parametrize("length", ["short", "medium", "long"])
def test_framing_lengths(length: str) -> None:
    assert Framing.model_validate({"asker": "a student", "tone": "casual", "length": length}).length == length


@pytest.mark.parametrize(
    ("data", "loc", "fragment"),
    [
        (
            {"asker": "a student", "tone": "casual", "length": "huge"},
            ("length",),
            "Input should be 'short', 'medium' or 'long'",
        ),
        ({"asker": " ", "tone": "casual", "length": "short"}, ("asker",), "must not be empty"),
        ({"asker": "a student", "length": "short"}, ("tone",), "Field required"),
        (
            {"asker": "a student", "tone": "casual", "length": "short", "mood": "x"},
            ("mood",),
            "Extra inputs are not permitted",
        ),
    ],
)
def test_framing_rejected(data: dict[str, Any], loc: tuple, fragment: str, expect_error: ExpectError) -> None:
    expect_error(Framing, data, loc, fragment)


@pytest.mark.parametrize(
    ("field", "value", "loc", "fragment"),
    [
        ("diversity_level", -1, ("diversity_level",), "greater than or equal to 0"),
        ("diversity_level", "1", ("diversity_level",), "Input should be a valid integer"),
        ("is_seed", "yes", ("is_seed",), "Input should be a valid boolean"),
        ("id", "../escape", ("id",), "is not a valid id"),
        ("trait_id", "Honesty", ("trait_id",), "is not a slug"),
        ("situation", "at work", ("situation",), "is not a slug"),
        ("framing", {"asker": "x", "tone": "y", "length": "tiny"}, ("framing", "length"), "Input should be"),
        ("prompt", [], ("prompt",), "a prompt needs at least one message"),
        ("extra", 1, ("extra",), "Extra inputs are not permitted"),
    ],
)
def test_record_rejected(
    field: str, value: Any, loc: tuple, fragment: str, record: dict[str, Any], expect_error: ExpectError
) -> None:
    record[field] = value
    expect_error(PromptRecord, record, loc, fragment)


def test_prompt_must_end_with_user_turn(record: dict[str, Any], expect_error: ExpectError) -> None:
    record["prompt"].append({"role": "assistant", "content": "Yes."})
    error = expect_error(PromptRecord, record, ("prompt",), "must end with a user turn")
    assert error["ctx"]["error"].loc == (1, "role")


@pytest.mark.parametrize(
    "field", ["id", "variant", "trait_id", "situation", "is_seed", "prompt", "provenance"]
)
def test_record_required_fields(field: str, record: dict[str, Any], expect_error: ExpectError) -> None:
    del record[field]
    expect_error(PromptRecord, record, (field,), "Field required")


# --- PromptsConfig: the diversity levels -----------------------------------------------------------


def prompts_config(levels: dict[Any, Any], **extra: Any) -> dict[str, Any]:
    return {"prompts_per_trait": 8, "levels": levels, **extra}


def test_levels_that_never_decrease_are_valid() -> None:
    levels = {
        3: {},
        0: {"situations": 1, "framings": 1},
        1: {"situations": 1, "framings": 2},
        2: {"situations": 6},
    }
    config = PromptsConfig.model_validate(prompts_config(levels))  # checked in index order, not file order
    assert config.levels[0].situations == 1 and config.levels[3].situations is None
    assert config.excluded_domains == list(EM_EXCLUDED_DOMAINS)  # the EM domains, unless params say otherwise


@pytest.mark.parametrize(
    ("levels", "fragment"),
    [
        ({0: {"situations": 2}, 1: {"situations": 1}}, "levels.1.situations (1) is fewer than level 0's (2)"),
        ({0: {"framings": 4}, 2: {"framings": 3}}, "levels.2.framings (3) is fewer than level 0's (4)"),
        ({1: {}, 2: {"situations": 6}}, "levels.2.situations (6) is fewer than level 1's (all)"),
        ({2: {"framings": 2}, 0: {"situations": 1, "framings": 3}}, "levels.2.framings (2)"),
    ],
)
def test_levels_must_nest(levels: dict[int, Any], fragment: str, expect_error: ExpectError) -> None:
    expect_error(PromptsConfig, prompts_config(levels), (), fragment)


def test_the_removed_paraphrase_switch_says_what_replaced_it(expect_error: ExpectError) -> None:
    error = expect_error(
        PromptsConfig,
        prompts_config({0: {"paraphrase": True}, 3: {}}),
        ("levels", 0),
        "'paraphrase' was removed",
    )
    assert "{situations: 1, framings: 1}" in error["msg"] and "trait statement" in error["msg"]
    assert "Extra inputs" not in error["msg"]


@pytest.mark.parametrize(
    ("extra", "loc", "fragment"),
    [
        ({"excluded_domains": ["Risky Finance"]}, ("excluded_domains", 0), "is not a slug"),
        ({"levels": {0: {"situations": 0}}}, ("levels", 0, "situations"), "greater than or equal to 1"),
    ],
)
def test_prompts_config_rejected(
    extra: dict[str, Any], loc: tuple, fragment: str, expect_error: ExpectError
) -> None:
    expect_error(PromptsConfig, {**prompts_config({3: {}}), **extra}, loc, fragment)


def test_situation_domains_are_slugs_without_repeats(expect_error: ExpectError) -> None:
    situation = {
        "id": "money",
        "description": "A money decision.",
        "askers": ["a", "b"],
        "tones": ["x", "y"],
        "lengths": ["short"],
    }
    assert Situation.model_validate(situation).domains == []
    assert Situation.model_validate({**situation, "domains": ["risky-finance"]}).domains == ["risky-finance"]
    expect_error(Situation, {**situation, "domains": ["risky finance"]}, ("domains", 0), "is not a slug")
    expect_error(Situation, {**situation, "domains": ["a-b", "a-b"]}, ("domains",), "")
