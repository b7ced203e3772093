"""Qabf of models against the plain average on real multi-exposure pairs (MEFB test split).

    python scripts/experiments/mef_qabf.py COUNT MODEL [MODEL ...] [--data ../shared/data]

For the first COUNT MEFB test pairs (sorted by stem), at full resolution, one step, default precision:
prints the mean Qabf of the plain average and of every model, and on how many pairs each model's Qabf is
above the average's. The "Recipe variants" table of model_card.md comes from this script.
"""

from __future__ import annotations

import argparse

from fusionfm import FusionFMPipeline
from fusionfm.datasets import find_pairs, load_pair
from fusionfm.evaluation.baseline import average_255
from fusionfm.metrics.fusion import qabf, to_gray_255


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("count", type=int, help="number of MEFB test pairs")
    parser.add_argument("models", nargs="+", help="model folders or Hub ids")
    parser.add_argument("--data", default="../shared/data")
    args = parser.parse_args()
    pairs = find_pairs(args.data, "MEF", split="test", datasets=["MEFB"])[: args.count]
    pipelines = {name: FusionFMPipeline.from_pretrained(name) for name in args.models}
    for pipeline in pipelines.values():
        pipeline.set_progress_bar_config(disable=True)
    average_scores, model_scores = [], {name: [] for name in pipelines}
    for pair in pairs:
        image_a, image_b = load_pair(pair)
        gray_a, gray_b = to_gray_255(image_a), to_gray_255(image_b)
        average_scores.append(float(qabf(average_255(gray_a, gray_b), gray_a, gray_b)))
        for name, pipeline in pipelines.items():
            fused = pipeline(image_a, image_b, task="MEF", output_type="pt").images
            model_scores[name].append(float(qabf(to_gray_255(fused), gray_a, gray_b)))
    print(f"{len(pairs)} MEFB test pairs; plain average: mean Qabf {sum(average_scores) / len(pairs):.3f}")
    for name, scores in model_scores.items():
        above = sum(score > average for score, average in zip(scores, average_scores, strict=True))
        print(f"{name}: mean Qabf {sum(scores) / len(scores):.3f}, above the average on {above} of {len(scores)}")


if __name__ == "__main__":
    main()
