"""MEF-SSIM on the Waterloo exposure sequences: a model's fusion of each whole sequence against the built-in
Mertens-style exposure fusion of the same frames, the plain mean, and (Candle, LightHouse) the 8 published
algorithms whose results ship with the data.

    python scripts/reports/waterloo_mef_ssim.py [MODEL ...] [--data ../shared/data]

Every sequence with 3 or more frames, at its own size, one step, all frames at once (the stack path of
FusionFMPipeline). Prints a Markdown table (rows: sequences and their mean; columns: methods) and, for the
model, the largest change when the frames are given in a shuffled order.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import torch

from fusionfm import FusionFMPipeline, FusionImageProcessor
from fusionfm.color import recombine_frames
from fusionfm.metrics.mef_ssim import mef_ssim
from fusionfm.priors import exposure_fusion_frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()
    processor = FusionImageProcessor()
    pipelines = {}
    for model in args.models:
        pipelines[model] = FusionFMPipeline.from_pretrained(model)
        pipelines[model].set_progress_bar_config(disable=True)
    root = args.data / "MEF" / "Waterloo"
    methods = [*pipelines, "exposure (built-in, Mertens-style)", "mean"]
    published = sorted({path.stem for path in (root / "fused").glob("*/*.png")})
    scores: dict[str, dict[str, float]] = {}
    shuffle_change: dict[str, float] = dict.fromkeys(pipelines, 0.0)
    for sequence in sorted((root / "sequences").iterdir()):
        frames = [processor.load(path) for path in sorted(sequence.glob("*.png"))]
        if len(frames) < 3:
            continue
        stack = torch.stack(frames)
        row = {}
        for name, pipeline in pipelines.items():
            fused = pipeline(frames, task="MEF", output_type="pt").images[0]
            row[name] = mef_ssim(fused, stack)
            shuffled = frames[:]
            random.Random(0).shuffle(shuffled)
            again = pipeline(shuffled, task="MEF", output_type="pt").images[0]
            shuffle_change[name] = max(shuffle_change[name], float((fused - again).abs().max()))
        mertens = exposure_fusion_frames([frame[None] for frame in frames])
        row[methods[-2]] = mef_ssim(recombine_frames(mertens, [frame[None] for frame in frames])[0], stack)
        row["mean"] = mef_ssim(stack.mean(dim=0), stack)
        for path in sorted((root / "fused" / sequence.name).glob("*.png")):
            row[path.stem] = mef_ssim(processor.load(path), stack)
        scores[f"{sequence.name} ({len(frames)})"] = row
    columns = methods + published
    print("| sequence (frames) | " + " | ".join(columns) + " |\n|---|" + "---:|" * len(columns))
    for sequence, row in scores.items():
        print(f"| {sequence} | " + " | ".join(f"{row[c]:.4f}" if c in row else "" for c in columns) + " |")
    means = [sum(row[c] for row in scores.values()) / len(scores) for c in methods]
    print(f"| **mean of {len(scores)}** | " + " | ".join(f"**{m:.4f}**" for m in means) + " |" + " |" * len(published))
    for name, change in shuffle_change.items():
        print(f"\n{name}: largest change with the frames shuffled {change * 255:.2f} grey levels")


if __name__ == "__main__":
    main()
