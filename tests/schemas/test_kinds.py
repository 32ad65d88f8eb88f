"""The registry of file kinds shared by `charforge schema` and `charforge validate`."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from charforge.schemas import (
    KINDS,
    CharforgeConversation,
    CharforgePreferencePair,
    Conversation,
    Kind,
    PreferencePair,
)
from charforge.schemas.constitution import constitution_raw_checks

EXPECTED_NAMES = {
    "constitution",
    "oct-constitution",
    "prompts",
    "pairs",
    "conversations",
    "eval-questions",
    "eval-samples",
    "judge-scores",
    "judge-validation",
    "situations",
    "introspection",
    "em-seeds",
    "benign-prompts",
    "manifest",
}


def test_kind_names() -> None:
    assert set(KINDS) == EXPECTED_NAMES
    assert len(KINDS) == len(EXPECTED_NAMES)


@pytest.mark.parametrize("name", sorted(EXPECTED_NAMES))
def test_kind_is_registered_under_its_name(name: str) -> None:
    kind = KINDS[name]
    assert isinstance(kind, Kind)
    assert kind.name == name
    assert kind.shape in ("document", "rows")
    assert kind.summary


@pytest.mark.parametrize("name", sorted(EXPECTED_NAMES))
def test_json_schema(name: str) -> None:
    kind = KINDS[name]
    models = [kind.model] + ([kind.charforge_model] if kind.charforge_model else [])
    for model in models:
        schema = model.model_json_schema()
        assert schema["type"] == "object"
        assert schema.get("additionalProperties") is False
        json.dumps(schema)


@pytest.mark.parametrize("name", ["constitution", "manifest"])
def test_document_kinds(name: str) -> None:
    assert KINDS[name].shape == "document"


def test_constitution_raw_check() -> None:
    assert KINDS["constitution"].raw_checks is constitution_raw_checks


@pytest.mark.parametrize(
    ("name", "plain", "strict"),
    [
        ("pairs", PreferencePair, CharforgePreferencePair),
        ("conversations", Conversation, CharforgeConversation),
    ],
)
def test_row_model_charforge(name: str, plain: type[BaseModel], strict: type[BaseModel]) -> None:
    kind = KINDS[name]
    assert kind.row_model(charforge=False) is plain
    assert kind.row_model(charforge=True) is strict
    assert issubclass(strict, plain)


@pytest.mark.parametrize("name", sorted(EXPECTED_NAMES - {"pairs", "conversations"}))
def test_row_model_without_charforge_variant(name: str) -> None:
    kind = KINDS[name]
    assert kind.charforge_model is None
    assert kind.row_model(charforge=True) is kind.model
    assert kind.row_model(charforge=False) is kind.model
