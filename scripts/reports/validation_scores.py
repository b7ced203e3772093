"""Validation scores of models and of the built-in priors: the benchmark-aligned score of every recipe choice.

    python scripts/reports/validation_scores.py MODEL [MODEL ...] [--priors] [--metrics Qabf SF AG]
        [--by_dataset] [--resolution 256]

Per task family: the mean benchmark score (share of the task's built-in priors beaten, averaged over the nine
ranked metrics; fusionfm.evaluation.validation) of each model's one-step fusions of the validation pairs, and with
--priors of each built-in prior. Prints a Markdown table; with --metrics, one more per metric: each model's mean
value and the best built-in prior's (the issue-14 clause "at least the best built-in prior", on validation); with
--by_dataset those tables have a column per data set instead of per task family (a family's mean can hide a data
set below the prior: MRI-CT's AG in session 15). A last table counts the near-copies: pairs whose fusion lies within
NEAR_COPY_LEVELS grey levels of one source where the sources differ (a weakness of the score, which can reward them).
"""

from __future__ import annotations

import argparse

import torch

from fusionfm import FusionFMPipeline
from fusionfm.evaluation.ranking import RANKED_METRICS, ranked_metrics
from fusionfm.evaluation.validation import (
    NEAR_COPY_LEVELS,
    ValidationPair,
    benchmark_score,
    best_prior_mean,
    distance_to_nearer_source,
    validation_fusions,
    validation_pairs,
)
from fusionfm.metrics.fusion import to_gray_255
from fusionfm.priors import run_prior
from fusionfm.tasks import FAMILIES


def mean_metrics(fusions: dict[int, torch.Tensor], pairs: list[ValidationPair], metrics: list[str]) -> dict[str, float]:
    """Mean of each of ``metrics`` over the fusions of ``pairs``."""
    totals = dict.fromkeys(metrics, 0.0)
    for pair in pairs:
        values = ranked_metrics(fusions[id(pair)], to_gray_255(pair.image_a), to_gray_255(pair.image_b))
        for metric in metrics:
            totals[metric] += values[metric] / len(pairs)
    return totals


def near_copies(fusions: dict[int, torch.Tensor], pairs: list[ValidationPair]) -> int:
    """How many of ``pairs`` were fused into a near-copy of one source."""
    return sum(distance_to_nearer_source(fusions[id(pair)], pair) < NEAR_COPY_LEVELS for pair in pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*")
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--priors", action="store_true")
    parser.add_argument("--metrics", nargs="+", default=[], choices=RANKED_METRICS, metavar="METRIC",
                        help=f"also tabulate these metrics' means ({', '.join(RANKED_METRICS)})")
    parser.add_argument("--by_dataset", action="store_true", help="metric tables per data set, not per family")
    parser.add_argument("--resolution", type=int, default=256)
    args = parser.parse_args()
    pairs = {family: validation_pairs(args.data, family, args.resolution) for family in FAMILIES}
    groups = pairs
    if args.by_dataset:
        groups = {f"{family} {dataset}": [pair for pair in pairs[family] if pair.dataset == dataset]
                  for family in FAMILIES for dataset in dict.fromkeys(pair.dataset for pair in pairs[family])}
    rows: dict[str, dict[str, float]] = {}
    metric_rows: dict[str, dict[str, dict[str, float]]] = {}
    copy_rows: dict[str, dict[str, int]] = {}
    for name in args.models:
        pipeline = FusionFMPipeline.from_pretrained(name)
        pipeline.set_progress_bar_config(disable=True)
        # Fused once (fp32, as training's evaluation scores them) for the score, the metrics and the near-copies.
        fusions = {id(pair): fused for family in FAMILIES
                   for pair, fused in zip(pairs[family], validation_fusions(pipeline, pairs[family], "fp32"),
                                          strict=True)}
        rows[name] = {family: sum(benchmark_score(fusions[id(p)], p) for p in pairs[family]) / len(pairs[family])
                      for family in FAMILIES}
        copy_rows[name] = {group: near_copies(fusions, group_pairs) for group, group_pairs in groups.items()}
        if args.metrics:
            metric_rows[name] = {group: mean_metrics(fusions, group_pairs, args.metrics)
                                 for group, group_pairs in groups.items()}
    if args.priors:
        for family in FAMILIES:
            for prior in pairs[family][0].prior_metrics:
                fusions = {id(p): run_prior(prior, p.image_a, p.image_b, p.task) for p in pairs[family]}
                score = sum(benchmark_score(fusions[id(p)], p) for p in pairs[family])
                rows.setdefault(f"prior: {prior}", {})[family] = score / len(pairs[family])
                copies = {group: near_copies(fusions, group_pairs) for group, group_pairs in groups.items()
                          if group_pairs[0].task.family == family}
                copy_rows.setdefault(f"prior: {prior}", {}).update(copies)
    print("| method | " + " | ".join(FAMILIES) + " | mean |\n|---|" + "---:|" * (len(FAMILIES) + 1))
    for name, scores in rows.items():
        cells = [f"{scores[f]:.3f}" if f in scores else "" for f in FAMILIES]
        known = [scores[f] for f in FAMILIES if f in scores]
        print(f"| {name} | " + " | ".join(cells) + f" | {sum(known) / len(known):.3f} |")
    for metric in args.metrics:
        print(f"\n| {metric} (mean) | " + " | ".join(groups) + " |\n|---|" + "---:|" * len(groups))
        for name, values in metric_rows.items():
            print(f"| {name} | " + " | ".join(f"{values[group][metric]:.3f}" for group in groups) + " |")
        best = [best_prior_mean(group_pairs, metric) for group_pairs in groups.values()]
        print("| best built-in prior | " + " | ".join(f"{value:.3f} ({prior})" for prior, value in best) + " |")
    print(f"\n| near-copies (< {NEAR_COPY_LEVELS:g} grey levels from a source) | "
          + " | ".join(f"{group} ({len(group_pairs)})" for group, group_pairs in groups.items())
          + " |\n|---|" + "---:|" * len(groups))
    for name, counts in copy_rows.items():
        print(f"| {name} | " + " | ".join(str(counts[group]) if group in counts else "" for group in groups) + " |")
    print("\nValidation pairs: " + ", ".join(f"{f} {len(pairs[f])}" for f in FAMILIES) + f"; {args.resolution} px.")


if __name__ == "__main__":
    main()
