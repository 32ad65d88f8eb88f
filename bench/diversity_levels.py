"""Show that the diversity knob moves diversity: one constitution, every level, several seeds.

Runs `charforge run prompts` for <constitution>-d<level>-s<seed> over the levels in params.yaml and
the seeds given, on the models params.yaml names (the embedded SmolLM2 in the smoke profile), then
prints one row per level: rows, situations per trait, the prompts' tokens (teacher's tokenizer), the
prompt rejections, and each diversity metric's mean ± spread (max - min) over seeds. With --distill it
also runs `charforge run distill` and adds pairs after distillation and their training tokens.
The claim to check: diversity rises with the level (Vendi and cosine distance up, compression ratio
and Self-BLEU down), and the top level differs from level 0 by more than the seed-to-seed spread; what
else differs between levels is printed beside it.

    .venv/bin/python bench/diversity_levels.py [--constitution humor] [--seeds 0 1 2] [--distill]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections import Counter
from pathlib import Path

import yaml

# charforge.eval.diversity's figures (report version 2): compression ratio and Self-BLEU are redundancy
# (higher = less diverse), Vendi and cosine distance diversity (higher = more diverse)
METRICS = ("compression_ratio", "self_bleu", "vendi_score", "mean_pairwise_cosine_distance")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--constitution", default="humor")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--levels", type=int, nargs="+", help="default: every level in params")
    parser.add_argument("--distill", action="store_true", help="also distill pairs (slow on CPU)")
    args = parser.parse_args()

    levels = args.levels or sorted(yaml.safe_load(args.params.read_text())["prompts"]["levels"])
    results: dict[int, list[dict]] = {}
    for level in levels:
        for seed in args.seeds:
            variant = f"{args.constitution}-d{level}-s{seed}"
            for stage in ("prompts", "distill") if args.distill else ("prompts",):
                command = [sys.executable, "-m", "charforge.cli", "run", stage, "--variant", variant]
                subprocess.run([*command, "--params", str(args.params)], check=True)
            manifest = json.loads(Path(f"corpora/build/{variant}/prompts.manifest.json").read_text())
            metrics = manifest["metrics"]
            run = {
                "rows": manifest["rows"],
                "rejected": manifest["rejected"],
                "situations_per_trait": sorted(
                    {len(t["situations"]) for t in metrics["level"]["per_trait"].values()}
                ),
                "prompt_tokens": metrics["size"]["tokens"].get("total"),
                "generated_prompt_tokens": metrics["size"]["tokens"].get("generated"),
                **metrics["diversity"],
            }
            if args.distill:
                distill = json.loads(Path(f"metrics/{variant}/distill.json").read_text())
                run |= {"pairs": distill["rows"], "pair_tokens": distill["tokens"]["total"]}
            results.setdefault(level, []).append(run)

    counts = ["prompt_tokens", "generated_prompt_tokens"] + (["pairs", "pair_tokens"] if args.distill else [])
    header = "| level | rows | situations per trait | rejected | " + " | ".join([*counts, *METRICS]) + " |"
    print(header)
    print("|" + "---|" * (4 + len(counts) + len(METRICS)))
    summary = {}
    for level, runs in results.items():
        cells = []
        for count in counts:
            values = [run[count] for run in runs]
            if None in values:  # a teacher whose tokenizer could not be loaded
                cells.append("n/a")
                continue
            cells.append(f"{statistics.mean(values):.0f} ± {max(values) - min(values):.0f}")
        for metric in METRICS:
            values = [run["per_trait_mean"][metric] for run in runs]
            mean, spread = statistics.mean(values), max(values) - min(values)
            summary.setdefault(level, {})[metric] = (mean, spread)
            cells.append(f"{mean:.3f} ± {spread:.3f}")
        rejected = sum((Counter(run["rejected"]) for run in runs), Counter())
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(rejected.items())) or "none"
        situations = sorted({n for run in runs for n in run["situations_per_trait"]})
        print(
            f"| {level} | {runs[0]['rows']} | {'–'.join(map(str, situations))} | {reasons} (all seeds) | "
            + " | ".join(cells)
            + " |"
        )
    for metric in METRICS:
        low, high = summary[levels[0]][metric], summary[levels[-1]][metric]
        gap, spread = high[0] - low[0], max(high[1], low[1])
        print(f"{metric}, top level minus level {levels[0]}: {gap:+.3f}; seed spread {spread:.3f}")
    print(json.dumps({str(level): runs for level, runs in results.items()}))


if __name__ == "__main__":
    main()
