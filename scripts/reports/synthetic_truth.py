"""The synthetic validation pairs' truth scored as if it were a fusion, beside models and the built-in priors.

    python scripts/reports/synthetic_truth.py [MODEL ...] [--task MFF] [--data ../shared/data]

Every synthetic pair is made from one photograph (``fusionfm.labels.synthetic``); for MFF that photograph is the
all-in-focus image, a perfect fusion of the pair. Per method, over the task's synthetic validation pairs at their
own size: mean PSNR to the truth (dB, 8-bit luma) and the issue-14 clause's SF, AG and Qabf, with the truth itself as
a row, so a clause that the truth fails is seen to be one that no faithful fusion meets (docs/quality.md, session
21). For MEF the truth is one mid exposure, not an ideal fusion: read its row as a reference only.
"""

from __future__ import annotations

import argparse
import csv

from fusionfm import FusionFMPipeline
from fusionfm.color import luminance
from fusionfm.evaluation.metrics import to_gray_255
from fusionfm.evaluation.ranking import ranked_metrics
from fusionfm.evaluation.reference import psnr_to_truth
from fusionfm.evaluation.validation import SPLIT_FILE
from fusionfm.labels.priors import priors_for, run_prior
from fusionfm.labels.synthetic import SyntheticPairs

CLAUSE_METRICS = ("SF", "AG", "Qabf")


def synthetic_validation_stems(task: str) -> list[str]:
    """Stems of the task's synthetic validation pairs (rows of the split file without source paths)."""
    with SPLIT_FILE.open(newline="") as handle:
        return [row["stem"] for row in csv.DictReader(handle) if row["task"] == task and not row["path_a"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["fusionfm/default_model"])
    parser.add_argument("--task", default="MFF", choices=("MEF", "MFF"))
    parser.add_argument("--data", default="../shared/data")
    args = parser.parse_args()
    pipelines = {name: FusionFMPipeline.from_pretrained(name) for name in args.models}
    for pipeline in pipelines.values():
        pipeline.set_progress_bar_config(disable=True)
    dataset = SyntheticPairs(args.data, args.task, "train", seed=0)  # exactly as validation_pairs makes them
    index = {row["stem"]: i for i, row in enumerate(dataset.rows)}
    stems = synthetic_validation_stems(args.task)
    totals: dict[str, list[float]] = {}
    for stem in stems:
        pair = dataset[index[stem]]
        image_a, image_b, truth = pair.image_a[None], pair.image_b[None], pair.ground_truth[None]
        fusions = {"truth (the photograph)": truth}
        fusions.update({name: pipeline(pair.image_a, pair.image_b, task=args.task, processing_resolution=0,
                                       output_type="pt").images for name, pipeline in pipelines.items()})
        fusions.update({f"prior: {prior.name}": run_prior(prior.name, image_a, image_b, args.task)
                        for prior in priors_for(args.task)})
        gray_a, gray_b = to_gray_255(image_a), to_gray_255(image_b)
        for method, fused in fusions.items():
            metrics = ranked_metrics(luminance(fused), gray_a, gray_b)
            luma_psnr = psnr_to_truth(to_gray_255(fused) / 255, to_gray_255(truth) / 255)  # 8-bit luma
            values = [luma_psnr] + [float(metrics[name]) for name in CLAUSE_METRICS]
            row = totals.setdefault(method, [0.0] * len(values))
            for i, value in enumerate(values):
                row[i] += value / len(stems)
    print(f"| {args.task}, {len(stems)} synthetic validation pairs, own size | PSNR to the truth (dB) | "
          + " | ".join(CLAUSE_METRICS) + " |\n|---|" + "---:|" * (1 + len(CLAUSE_METRICS)))
    for method, (psnr, *clause) in totals.items():
        psnr_cell = "(itself)" if method.startswith("truth") else f"{psnr:.2f}"
        print(f"| {method} | {psnr_cell} | " + " | ".join(f"{value:.4f}" for value in clause) + " |")


if __name__ == "__main__":
    main()
