"""Synthetic pairs' truth scored as if it were a fusion, beside models and the built-in priors.

    python scripts/reports/synthetic_truth.py [MODEL ...] [--task MFF] [--photographs validation|test]
        [--detail_gains 1 ...]

Every synthetic pair is made from one photograph (``fusionfm.synthetic``); for MFF that photograph is the
all-in-focus image, a perfect fusion of the pair. Per method, at the pairs' own size: the mean rank over the nine
benchmark metrics among the methods (the truth not ranked), mean PSNR to the truth (dB, 8-bit luma) and the
issue-14 clause's SF, AG and Qabf, with the truth itself as a row, so a clause that the truth fails is seen to be
one that no faithful fusion meets (docs/quality.md, session 21). ``--photographs validation`` takes the task's
synthetic validation pairs; ``test`` every pair made from the natural test photographs, which no training or
choice has seen (pairs like those a user brings). For MEF the truth is one mid exposure, not an ideal fusion: read
its row as a reference only. ``--detail_gains`` adds each model called with those ``detail_gain`` values (1: the
sources' own contrast) beside its own gains.
"""

from __future__ import annotations

import argparse
import csv

from fusionfm import FusionFMPipeline
from fusionfm.color import luminance
from fusionfm.evaluation.ranking import rank_methods, ranked_metrics
from fusionfm.evaluation.reference import psnr_to_truth
from fusionfm.evaluation.validation import SPLIT_FILE
from fusionfm.metrics.fusion import to_gray_255
from fusionfm.priors import priors_for, run_prior
from fusionfm.synthetic import SyntheticPairs

CLAUSE_METRICS = ("SF", "AG", "Qabf")
TRUTH = "truth (the photograph)"


def synthetic_validation_stems(task: str) -> list[str]:
    """Stems of the task's synthetic validation pairs (rows of the split file without source paths)."""
    with SPLIT_FILE.open(newline="") as handle:
        return [row["stem"] for row in csv.DictReader(handle) if row["task"] == task and not row["path_a"]]


def mean_over_pairs(by_stem: dict[str, dict[str, float]], metric: str) -> float:
    """The mean of one metric over a method's pairs (``by_stem[stem][metric]``)."""
    return sum(values[metric] for values in by_stem.values()) / len(by_stem)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["fusionfm/default_model"])
    parser.add_argument("--task", default="MFF", choices=("MEF", "MFF"))
    parser.add_argument("--photographs", default="validation", choices=("validation", "test"))
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--detail_gains", type=float, nargs="*", default=[],
                        help="also call every model with these detail_gain values")
    args = parser.parse_args()
    pipelines = {name: FusionFMPipeline.from_pretrained(name) for name in args.models}
    for pipeline in pipelines.values():
        pipeline.set_progress_bar_config(disable=True)
    calls = {name: (pipeline, None) for name, pipeline in pipelines.items()}  # method -> (pipeline, detail_gain)
    calls.update({f"{name}, detail_gain={gain:g}": (pipeline, gain) for name, pipeline in pipelines.items()
                  for gain in args.detail_gains})
    # Seed 0 of the train photographs is exactly how validation_pairs makes the synthetic validation pairs.
    split = "train" if args.photographs == "validation" else "test"
    dataset = SyntheticPairs(args.data, args.task, split, seed=0)
    index = {row["stem"]: i for i, row in enumerate(dataset.rows)}
    stems = synthetic_validation_stems(args.task) if args.photographs == "validation" else list(index)
    scores: dict[str, dict[str, dict[str, float]]] = {}  # method -> stem -> metric, as rank_methods takes them
    for stem in stems:
        pair = dataset[index[stem]]
        image_a, image_b, truth = pair.image_a[None], pair.image_b[None], pair.ground_truth[None]
        fusions = {TRUTH: truth}
        fusions.update({name: pipeline(pair.image_a, pair.image_b, task=args.task, processing_resolution=0,
                                       detail_gain=gain, output_type="pt").images
                        for name, (pipeline, gain) in calls.items()})
        fusions.update({f"prior: {prior.name}": run_prior(prior.name, image_a, image_b, args.task)
                        for prior in priors_for(args.task)})
        gray_a, gray_b, gray_truth = to_gray_255(image_a), to_gray_255(image_b), to_gray_255(truth)
        for method, fused in fusions.items():
            values = ranked_metrics(luminance(fused), gray_a, gray_b)
            values["PSNR"] = psnr_to_truth(to_gray_255(fused) / 255, gray_truth / 255)  # 8-bit luma
            scores.setdefault(method, {})[stem] = values
    rows = rank_methods({method: by_stem for method, by_stem in scores.items() if method != TRUTH})
    print(f"| {args.task}, {len(stems)} synthetic pairs of the {args.photographs} photographs, own size | mean rank | "
          "PSNR to the truth (dB) | " + " | ".join(CLAUSE_METRICS) + " |\n|---|" + "---:|" * (2 + len(CLAUSE_METRICS)))
    print(f"| {TRUTH} | | | " + " | ".join(f"{mean_over_pairs(scores[TRUTH], metric):.4f}" for metric in CLAUSE_METRICS)
          + " |")
    for row in rows:
        psnr = mean_over_pairs(scores[row["method"]], "PSNR")
        print(f"| {row['method']} | {row['mean_rank']:.2f} | {psnr:.2f} | "
              + " | ".join(f"{row[metric]:.4f}" for metric in CLAUSE_METRICS) + " |")


if __name__ == "__main__":
    main()
