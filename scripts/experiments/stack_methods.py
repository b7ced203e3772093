"""Which way to fuse N frames: the native N-way blend (the pipeline's stack path) or recursive pairwise fusion
(frames darkest first, each fused into the running result), by MEF-SSIM on the Waterloo sequences.

    python scripts/experiments/stack_methods.py [MODEL] [--data ../shared/data]

Prints per method the mean MEF-SSIM over the sequences with 3 or more frames, the seconds, and how much the
result changes when the frames come shuffled (recursive pairwise fusion depends on the order it is given
unless it sorts; here it sorts MEF frames by brightness, so the change is what sorting leaves).
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch

from fusionfm import FusionFMPipeline, FusionImageProcessor
from fusionfm.color import luminance
from fusionfm.metrics.mef_ssim import mef_ssim


def recursive_pairwise(pipeline: FusionFMPipeline, frames: list[torch.Tensor]) -> torch.Tensor:
    """Fuse the darkest two, then each brighter frame into the result (as the over-exposed source)."""
    ordered = sorted(frames, key=lambda frame: float(luminance(frame[None]).mean()))
    fused = ordered[0]
    for frame in ordered[1:]:
        fused = pipeline(fused, frame, task="MEF", output_type="pt").images[0]
    return fused


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=None)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()
    pipeline = FusionFMPipeline.from_pretrained(args.model)
    pipeline.set_progress_bar_config(disable=True)
    processor = FusionImageProcessor()
    methods = {"native N-way": lambda frames: pipeline(frames, task="MEF", output_type="pt").images[0],
               "recursive pairwise": lambda frames: recursive_pairwise(pipeline, frames)}
    scores = {name: [] for name in methods}
    seconds = dict.fromkeys(methods, 0.0)
    changes = dict.fromkeys(methods, 0.0)
    for sequence in sorted((args.data / "MEF" / "Waterloo" / "sequences").iterdir()):
        frames = [processor.load(path) for path in sorted(sequence.glob("*.png"))]
        if len(frames) < 3:
            continue
        shuffled = frames[:]
        random.Random(0).shuffle(shuffled)
        for name, method in methods.items():
            started = time.perf_counter()
            fused = method(frames)
            seconds[name] += time.perf_counter() - started
            scores[name].append(mef_ssim(fused, torch.stack(frames)))
            changes[name] = max(changes[name], float((method(shuffled) - fused).abs().max()) * 255)
    print("| method | mean MEF-SSIM | seconds (all sequences) | largest change, frames shuffled (grey levels) |")
    print("|---|---:|---:|---:|")
    for name in methods:
        print(f"| {name} | {sum(scores[name]) / len(scores[name]):.4f} | {seconds[name]:.1f} | {changes[name]:.2f} |")


if __name__ == "__main__":
    main()
