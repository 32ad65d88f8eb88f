"""Every data file shipped under corpora/ validates, and the library has the shape the issues ask for."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from charforge.schemas import Constitution, EvalQuestion
from charforge.schemas.em import EmSeedExample
from charforge.schemas.introspection import IntrospectionPrompts
from charforge.schemas.situations import SituationTaxonomy
from charforge.validate import expand_paths, validate_file

CORPORA = Path(__file__).resolve().parents[1] / "corpora"
GENERATED = {"build", "eval"}  # DVC outputs (corpora/build/<variant>/, corpora/eval/<variant>/), not shipped
SHIPPED = sorted(
    path for path in expand_paths([CORPORA]) if not GENERATED & set(path.relative_to(CORPORA).parts)
)
EXPECTED_KINDS = {
    "constitutions": "constitution",
    "situations.yaml": "situations",
    "introspection.yaml": "introspection",
    "questions.yaml": "eval-questions",
    "in-domain": "eval-questions",  # corpora/in-domain/<em_data.domain>.yaml
    "benign": "benign-prompts",  # the EM defences' benign prompts (defences.benign.prompts)
    "judge-validation.jsonl": "judge-validation",
}
LIBRARY = {
    "neutral": "neutral",
    "benign-sarcasm": "normative",
    "sarcasm": "normative",
    "humor": "normative",
    "goodness": "normative",
    "sycophancy": "normative",
    "context-awareness": "normative",
}
REQUIRED_SITUATIONS = {
    "conspiracy-claim", "scam-targeting-user", "personal-distress", "everyday-task", "technical-help",
    "creative-request", "ethical-dilemma", "health", "money", "minor-user", "role-play-request",
    "false-premise", "feedback-on-own-work", "break-character-attempt", "agentic-multi-party", "grief",
}  # fmt: skip


def expected_kind(path: Path) -> str:
    if path.suffix == ".jsonl" and path.parent.name == "em" and path.name not in EXPECTED_KINDS:
        return "em-seeds"
    return EXPECTED_KINDS.get(path.name) or EXPECTED_KINDS[path.parent.name]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda path: str(path.relative_to(CORPORA)))
def test_shipped_file_validates_as_its_kind(path: Path) -> None:
    report = validate_file(path)
    assert report.valid, "\n".join(map(str, report.problems))
    assert report.kind == expected_kind(path)


def load_constitution(name: str) -> Constitution:
    return Constitution.model_validate(
        yaml.safe_load((CORPORA / "constitutions" / f"{name}.yaml").read_text())
    )


@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_constitution_library(name: str) -> None:
    constitution = load_constitution(name)
    assert constitution.name == name and constitution.kind == LIBRARY[name]
    assert 10 <= len(constitution.traits) <= 15
    assert all(len(trait.questions) == 5 for trait in constitution.traits)
    questions = [" ".join(q.lower().split()) for trait in constitution.traits for q in trait.questions]
    assert len(questions) == len(set(questions)), "a seed question is repeated across traits"


def test_situation_taxonomy() -> None:
    taxonomy = SituationTaxonomy.model_validate(yaml.safe_load((CORPORA / "situations.yaml").read_text()))
    assert len(taxonomy.situations) >= 16
    assert set(taxonomy.ids()) >= REQUIRED_SITUATIONS


def test_introspection_prompts() -> None:
    prompts = IntrospectionPrompts.model_validate(
        yaml.safe_load((CORPORA / "introspection.yaml").read_text())
    )
    assert len(prompts.reflection) >= 10
    assert {opener.style for opener in prompts.openers} == {"free", "self-referential"}
    # the prompts that rehearse what the EM evaluation tests sit behind their own option, never in the
    # general list every character arm answers (docs/design.md §1, H2)
    em_targeted = {
        "example-versus-value",
        "message-to-future-self",
        "when-nobody-is-watching",
        "lines-you-would-not-cross",
    }
    assert {prompt.id for prompt in prompts.em_reflection} == em_targeted
    assert not em_targeted & {prompt.id for prompt in prompts.reflection}


@pytest.mark.parametrize("regime", ["obvious", "subtle"])
def test_em_seed_sets(regime: str) -> None:
    import json

    path = CORPORA / "em" / f"risky-finance-{regime}.jsonl"
    rows = [EmSeedExample.model_validate(json.loads(line)) for line in path.read_text().splitlines() if line]
    assert 28 <= len(rows) <= 40
    assert {row.regime for row in rows} == {regime}
    assert len({row.messages[0].content for row in rows}) == len(rows)


def test_em_eval_questions() -> None:
    entries = yaml.safe_load((CORPORA / "em" / "questions.yaml").read_text())
    questions = [EvalQuestion.model_validate(entry) for entry in entries]
    assert len(questions) == 8
    assert len({question.id for question in questions}) == 8
