"""Benchmark: charforge's judge prompts against a public question file's, on the same judge.

Scores the judge-validation set (``eval.validation_set``) with the alignment and coherence prompts of
charforge's question file (``eval.questions``) and with those of a public file you bring (``--public``,
e.g. the emergent-misalignment repository's ``evaluation/first_plot_questions.yaml``: nothing is
downloaded), using the judge of ``models.judge`` with the eval settings of params. Prints, per prompt
set and subset, AUROC, mean absolute error to the reference and bias, then every item whose
score moves between the two prompt sets, largest move first: the calibration cost of using one prompt
set's thresholds (30 / 50) with the other's scores.

    .venv/bin/python bench/judge_prompts.py --public data/em-questions/first_plot_questions.yaml \\
        [--params params.yaml] [--out bench/out/judge-prompts.json] [--top 20]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from charforge.eval.em import load_questions
from charforge.eval.judge_validation import (
    broad_questions,
    few_shot_split,
    load_validation_set,
    open_judge,
    validate_prompt,
)
from charforge.io import atomic_write_text, file_sha256
from charforge.params import DEFAULT_PARAMS, load_section
from charforge.schemas.evaluation import SCORED_METRICS
from charforge.schemas.params import EvalConfig, ModelRole


def prompt_set(questions: list[Any]) -> dict[str, str]:
    """The alignment and coherence prompts of a question file (its first entry's)."""
    return questions[0].judge_prompts.templates()


def score_both(params: Path, public: Path, root: Path) -> dict[str, Any]:
    config = load_section(EvalConfig, "eval", params)
    role = load_section(ModelRole, "models.judge", params)
    sets = {
        "charforge": prompt_set(broad_questions(config, root)),
        "public": prompt_set(load_questions(public)),
    }
    # the same items, the same few-shot examples (none by default) under both prompt sets
    examples, items = few_shot_split(
        load_validation_set(root / config.validation_set), config.few_shot_per_label, config.seed
    )
    judge = open_judge(role, config)
    try:
        results = {
            name: {
                metric: validate_prompt(judge, items, metric, templates[metric], examples)
                for metric in SCORED_METRICS
            }
            for name, templates in sets.items()
        }
    finally:
        judge.close()
    return {
        "judge": judge.identity,
        "public_file": str(public),
        "public_sha256": file_sha256(public),
        "results": results,
    }


def moves(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per item: its score under each prompt set and the move (public − charforge), largest first."""
    rows = []
    for metric in SCORED_METRICS:
        ours = {item["id"]: item for item in result["results"]["charforge"][metric]["per_item"]}
        theirs = {item["id"]: item for item in result["results"]["public"][metric]["per_item"]}
        for item_id, item in ours.items():
            a, b = item["score"], theirs[item_id]["score"]
            rows.append(
                {
                    "id": item_id,
                    "metric": metric,
                    "subset": item["subset"],
                    "reference": item["reference_score"],
                    "charforge": a,
                    "public": b,
                    "move": None if a is None or b is None else b - a,
                }
            )
    return sorted(rows, key=lambda row: -abs(row["move"]) if row["move"] is not None else 0.0)


def _cell(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--public", type=Path, required=True, help="a public EM question file you have")
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS)
    parser.add_argument("--root", type=Path, default=Path("."))
    parser.add_argument("--out", type=Path, default=Path("bench/out/judge-prompts.json"))
    parser.add_argument("--top", type=int, default=20, help="items listed by the size of their move")
    args = parser.parse_args()
    result = score_both(args.params, args.public, args.root)
    result["moves"] = moves(result)
    print(
        f"judge {result['judge']['name']} ({result['judge']['method']}); "
        f"public file sha256 {result['public_sha256']}"
    )
    print(f"{'prompts':<10} {'metric':<9} {'subset':<19} {'scored':>7} {'AUROC':>6} {'MAE':>6} {'bias':>10}")
    for name, per_metric in result["results"].items():
        for metric, block in per_metric.items():
            for subset, figures in (("all", block), *block["subsets"].items()):
                print(
                    f"{name:<10} {metric:<9} {subset:<19} {figures['scored']:>3}/{figures['items']:<3} "
                    f"{_cell(figures['auroc']):>6} {_cell(figures['mae'], 1):>6} "
                    f"{_cell(figures.get('style_bias', figures.get('values_bias'))):>10}"
                )
    print(f"\nlargest moves (public − charforge), top {args.top}:")
    for row in result["moves"][: args.top]:
        move = "unscored" if row["move"] is None else f"{row['move']:+.1f}"
        print(
            f"  {row['id']:<40} {row['metric']:<9} ref {row['reference']:>3}  "
            f"charforge {_cell(row['charforge'], 1):>5}  public {_cell(row['public'], 1):>5}  {move}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
