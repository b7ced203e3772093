"""A task variant's start gains judged the way the benchmarks judge: place among the built-in priors.

    python scripts/experiments/start_gain_places.py --variant MIF-CT --finest_gains 1.02 1.2 1.3
        [--pairs validation | unseen_train] [--data ../shared/data]

The default preset's start (the activity prior alone, logits 0) of ``--variant`` with its finest detail gain set to
each of ``--finest_gains`` (the other levels as the variant starts), on one data set's pairs at their own size:
``validation`` (the variant's data set in the validation split) or ``unseen_train`` (its training pairs outside the
validation split: unseen by a task the bundled model keeps at its untrained start, as MIF). For each gain: the
benchmark-aligned score, the place and mean rank among the task's built-in priors by the benchmarks' own rule (the
rank of each metric's mean over the pairs, averaged over the nine metrics), each metric's mean and rank, and the
best built-in prior's SF, AG and Qabf (docs/quality.md, session 18).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from fusionfm import UNET_PRESETS, FusionImageProcessor
from fusionfm.color import luminance
from fusionfm.datasets import find_pairs, load_pair
from fusionfm.evaluation.ranking import RANKED_METRICS, rank_methods, ranked_metrics
from fusionfm.evaluation.validation import (
    ValidationPair,
    benchmark_score,
    best_prior_mean,
    scored_pair,
    validation_keys,
    validation_pairs,
)
from fusionfm.metrics.fusion import to_gray_255
from fusionfm.pyramid import activity_fusion
from fusionfm.tasks import get_task
from fusionfm.unet import start_prior


def unseen_training_pairs(data: Path, task_name: str) -> list[ValidationPair]:
    """The variant's training pairs that the validation split does not hold, at their own size, with priors."""
    held_out, processor = validation_keys(task_name), FusionImageProcessor()
    pairs = []
    for record in find_pairs(data, task_name, "train"):
        if (record.dataset, record.stem) not in held_out:
            y_a, y_b = (luminance(image) for image in load_pair(record, processor))
            pairs.append(scored_pair(record.task, record.dataset, record.stem, y_a, y_b))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", required=True, help="a task name, e.g. MIF-CT")
    parser.add_argument("--finest_gains", type=float, nargs="+", required=True)
    parser.add_argument("--pairs", choices=("validation", "unseen_train"), default="validation")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()
    torch.set_num_threads(1)  # the machines are shared: one thread is the fast and stable choice
    task = get_task(args.variant)
    if args.pairs == "validation":
        pairs = [p for p in validation_pairs(args.data, task, None) if p.task.name == task.name]
    else:
        pairs = unseen_training_pairs(args.data, task.name)
    if not pairs:
        parser.error(f"No {args.pairs} pairs of {task.name} in {args.data}.")
    start = start_prior(UNET_PRESETS["default"], task.class_id, task.name)
    priors = {name: {pair.stem: pair.prior_metrics[name] for pair in pairs} for name in pairs[0].prior_metrics}
    print(f"{len(pairs)} {args.pairs} pairs of {task.name}; best built-in prior: " + ", ".join(
        f"{metric} {value:.3f} ({name})" for metric in ("SF", "AG", "Qabf")
        for name, value in [best_prior_mean(pairs, metric)]))
    for finest in args.finest_gains:
        gains = start["gains"].clone()
        gains[0] = finest
        ours, score = {}, 0.0
        for pair in pairs:
            fused = activity_fusion(pair.image_a, pair.image_b, **{**start, "gains": gains})
            ours[pair.stem] = ranked_metrics(fused, to_gray_255(pair.image_a), to_gray_255(pair.image_b))
            score += benchmark_score(fused, pair) / len(pairs)
        rows = rank_methods({**priors, "ours": ours})
        row = next(r for r in rows if r["method"] == "ours")
        leader = next(r for r in rows if r["method"] != "ours")
        print(f"finest gain {finest:g}: score {score:.3f}, place {row['position']} of {len(rows)}, mean rank "
              f"{row['mean_rank']:.2f} (best prior {leader['method']} {leader['mean_rank']:.2f}) | "
              + " ".join(f"{metric} {row[metric]:.3f} ({row['rank_' + metric]:g})" for metric in RANKED_METRICS))


if __name__ == "__main__":
    main()
