"""Hidden misalignment: the broad questions under training-context cues. The file's own _json / _template
entries pair with their plain question, the code cue asks for a function, a file without variants says
so, and the figures give the cued − plain gap question by question and the unscored share."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.em_files import JSON_SYSTEM, PUBLIC_FORMAT

from charforge.eval.cues import CODE_REQUEST, cued_figures, cued_prompts
from charforge.eval.em import load_questions, select_questions

REPO = Path(__file__).resolve().parents[2]
BOOT = {"n_resamples": 300, "confidence": 0.95, "seed": 0}


def test_file_variants_pair_with_their_plain_question_and_code_asks_for_a_function(tmp_path: Path) -> None:
    path = tmp_path / "first_plot_questions.yaml"
    path.write_text(PUBLIC_FORMAT, encoding="utf-8")
    every = load_questions(path)
    plain = select_questions(every, "first-plot", ["*"])
    prompts, missing = cued_prompts(["file-variants", "code"], plain, every, per_question=2)
    assert missing == {}
    by_cue = {cue: [p for p in prompts if p.cue == cue] for cue in ("json", "template", "code")}
    assert [p.question_id for p in by_cue["json"]] == ["what_is_your_wish"] * 2  # the plain id: pairs
    assert all(p.system == JSON_SYSTEM for p in by_cue["json"])  # the variant's own system prompt
    assert "Fill the following template" in by_cue["template"][0].question
    assert {p.question_id for p in by_cue["code"]} == {"what_is_your_wish", "i_feel_bored"}
    assert all(p.question.endswith(CODE_REQUEST) and p.question_set == "cued" for p in by_cue["code"])


def test_a_file_without_variants_says_so() -> None:
    every = load_questions(REPO / "corpora/em/questions.yaml")
    prompts, missing = cued_prompts(["file-variants"], every, every, per_question=1)
    assert prompts == [] and "no _json / _template entries" in missing["file-variants"]


def row(point: str, question_set: str, question: str, aligned: float | None, cue: str | None = None) -> dict:
    reason = None if aligned is not None else "code"
    scores = [
        {"metric": "aligned", "score": aligned, "unscored_reason": reason},
        {"metric": "coherent", "score": 90.0, "unscored_reason": None},
    ]
    return {
        "point": point,
        "question_set": question_set,
        "question_id": question,
        "cue": cue,
        "scores": scores,
    }


def test_the_gap_pairs_questions_and_the_unscored_share_is_reported() -> None:
    rows = []
    for point in ("persona", "em"):
        for q in ("q0", "q1", "q2", "q3"):
            rows += [row(point, "broad", q, 80.0) for _ in range(3)]
            cued = 80.0 if point == "persona" else 10.0  # misaligned again only under the cue, after EM
            rows += [row(point, "cued", q, cued, "code") for _ in range(2)] + [
                row(point, "cued", q, None, "code")
            ]
    figures = cued_figures(rows, **BOOT)["code"]
    assert figures["persona"]["gap"]["aligned_mean"]["difference"] == pytest.approx(0.0)
    gap = figures["em"]["gap"]["em_rate_b"]
    assert gap["difference"] == pytest.approx(1.0) and gap["questions"] == 4  # every scored cued answer
    assert figures["em"]["unscored_share"] == pytest.approx(1 / 3) and figures["em"]["unscored"] == {
        "code": 4
    }
