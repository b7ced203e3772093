"""How close a model gets to its own pseudo-labels on training pairs (issue 14's distillation gap).

    python scripts/reports/distillation_gap.py MODEL IVF=work/labels/IVF-train MIF=... [--pairs 24]

For the first PAIRS labelled training pairs of each task (validation pairs left out, long side 256 px, one step):
PSNR of the model's fused luminance against the label's, and the model's SF and Qabf as a share of the label's
(100 % = as sharp and as edge-faithful as its labels). Prints a Markdown table.
"""

from __future__ import annotations

import argparse

import torch

from fusionfm import FusionFMPipeline
from fusionfm.color import luminance
from fusionfm.evaluation.validation import validation_keys
from fusionfm.image_processor import FusionImageProcessor
from fusionfm.metrics.fusion import qabf, spatial_frequency, to_gray_255
from fusionfm.training.datasets import LabelledPairs, parse_label_folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("labels", nargs="+", metavar="TASK=DIR")
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--pairs", type=int, default=24)
    parser.add_argument("--resolution", type=int, default=256)
    args = parser.parse_args()
    pipeline = FusionFMPipeline.from_pretrained(args.model)
    pipeline.set_progress_bar_config(disable=True)
    processor = FusionImageProcessor()
    print("| task | pairs | PSNR to label (dB) | SF share | Qabf share |\n|---|---:|---:|---:|---:|")
    for task, folder in parse_label_folders(args.labels).items():
        pairs = LabelledPairs(folder, args.data, task, exclude=validation_keys(task))
        psnr, sf_share, qabf_share = [], [], []
        for index in range(min(args.pairs, len(pairs))):
            item = pairs[index]
            a, b, label = (item[key][None].float() / 255 for key in ("image_a", "image_b", "target"))
            size = processor.processing_size(tuple(a.shape[-2:]), args.resolution)
            a, b, label = (processor.resize(x, size) for x in (a, b, label))
            with torch.no_grad():
                fused = luminance(pipeline(a, b, task=pairs.pairs[index].task, processing_resolution=0,
                                           output_type="pt", show_progress_bar=False).images)
            psnr.append(float(10 * torch.log10(1 / ((fused - label) ** 2).mean())))
            gray_f, gray_l, gray_a, gray_b = (to_gray_255(x) for x in (fused, label, a, b))
            sf_share.append(float(spatial_frequency(gray_f) / spatial_frequency(gray_l)))
            qabf_share.append(float(qabf(gray_f, gray_a, gray_b) / qabf(gray_l, gray_a, gray_b)))
        count = len(psnr)
        print(f"| {task} | {count} | {sum(psnr) / count:.2f} | {100 * sum(sf_share) / count:.0f} % | "
              f"{100 * sum(qabf_share) / count:.0f} % |", flush=True)


if __name__ == "__main__":
    main()
