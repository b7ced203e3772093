"""Validation scores of models and of the built-in priors: the benchmark-aligned score of every recipe choice.

    python scripts/reports/validation_scores.py MODEL [MODEL ...] [--priors] [--resolution 256]

Per task family: the mean benchmark score (share of the task's built-in priors beaten, averaged over the nine
ranked metrics; fusionfm.evaluation.validation) of each model's one-step fusions of the validation pairs, and with
--priors of each built-in prior. Prints a Markdown table.
"""

from __future__ import annotations

import argparse

from fusionfm import FusionFMPipeline
from fusionfm.evaluation.validation import benchmark_score, validation_pairs, validation_quality
from fusionfm.labels.priors import run_prior
from fusionfm.tasks import FAMILIES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*")
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--priors", action="store_true")
    parser.add_argument("--resolution", type=int, default=256)
    args = parser.parse_args()
    pairs = {family: validation_pairs(args.data, family, args.resolution) for family in FAMILIES}
    rows: dict[str, dict[str, float]] = {}
    for name in args.models:
        pipeline = FusionFMPipeline.from_pretrained(name)
        pipeline.set_progress_bar_config(disable=True)
        rows[name] = {family: validation_quality(pipeline, pairs[family], "fp32") for family in FAMILIES}
    if args.priors:
        for family in FAMILIES:
            for prior in pairs[family][0].prior_metrics:
                score = sum(benchmark_score(run_prior(prior, p.image_a, p.image_b, p.task), p) for p in pairs[family])
                rows.setdefault(f"prior: {prior}", {})[family] = score / len(pairs[family])
    print("| method | " + " | ".join(FAMILIES) + " | mean |\n|---|" + "---:|" * (len(FAMILIES) + 1))
    for name, scores in rows.items():
        cells = [f"{scores[f]:.3f}" if f in scores else "" for f in FAMILIES]
        known = [scores[f] for f in FAMILIES if f in scores]
        print(f"| {name} | " + " | ".join(cells) + f" | {sum(known) / len(known):.3f} |")
    print("\nValidation pairs: " + ", ".join(f"{f} {len(pairs[f])}" for f in FAMILIES) + f"; {args.resolution} px.")


if __name__ == "__main__":
    main()
