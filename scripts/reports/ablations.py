"""Ablation table: models (and step counts) on each task's fixed test pairs, per metric and relative to averaging.

Every model is scored on the same pairs as the training script's R matrix (``evaluation_pairs``: COUNT test
pairs per task taken in turn from each data set, long side RESOLUTION px).
Usage: python scripts/reports/ablations.py NAME=MODEL_DIR[@STEPS] ... [--pairs 16] [--resolution 256]
"""

from __future__ import annotations

import argparse

import torch

from fusionfm import FusionFMPipeline
from fusionfm.color import luminance
from fusionfm.evaluation.baseline import average_255
from fusionfm.evaluation.metrics import to_gray_255
from fusionfm.evaluation.quality import QUALITY_METRICS, evaluation_pairs, quality_score

TASKS = ("IVF", "MIF", "MEF", "MFF")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="NAME=MODEL_DIR or NAME=MODEL_DIR@STEPS")
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=256)
    args = parser.parse_args()
    pairs = {task: evaluation_pairs(args.data, task, args.pairs, args.resolution) for task in TASKS}
    print("| variant | " + " | ".join(f"{task} Qabf | {task} quality" for task in TASKS) + " | mean quality |")
    print("|---|" + "---:|" * (2 * len(TASKS) + 1))
    def average_qabf(pair) -> float:
        gray_a, gray_b = to_gray_255(pair.image_a), to_gray_255(pair.image_b)
        return float(QUALITY_METRICS["Qabf"](average_255(gray_a, gray_b), gray_a, gray_b))

    averages = {task: sum(average_qabf(p) for p in pairs[task]) / len(pairs[task]) for task in TASKS}
    print("| plain average | " + " | ".join(f"{averages[task]:.3f} | 1.000" for task in TASKS) + " | 1.000 |")
    for spec in args.models:
        name, _, path = spec.partition("=")
        path, _, steps = path.partition("@")
        pipeline = FusionFMPipeline.from_pretrained(path)
        cells, qualities = [], []
        for task in TASKS:
            qabf = quality = 0.0
            for pair in pairs[task]:
                with torch.no_grad():
                    fused = luminance(pipeline(pair.image_a, pair.image_b, task=pair.task,
                                               num_inference_steps=int(steps or 1), processing_resolution=0,
                                               output_type="pt", show_progress_bar=False).images)
                as_255 = [to_gray_255(x) for x in (fused, pair.image_a, pair.image_b)]
                qabf += float(QUALITY_METRICS["Qabf"](*as_255)) / len(pairs[task])
                quality += float(quality_score(fused, pair.image_a, pair.image_b)) / len(pairs[task])
            cells.append(f"{qabf:.3f} | {quality:.3f}")
            qualities.append(quality)
        print(f"| {name} | " + " | ".join(cells) + f" | {sum(qualities) / len(qualities):.3f} |", flush=True)
    print(f"\n{args.pairs} test pairs per task at {args.resolution} px; quality = mean of Qabf, SSIM and VIF each "
          "relative to the plain average (1.0 = as good as averaging).")


if __name__ == "__main__":
    main()
