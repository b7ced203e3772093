"""How should a stack's base level and detail levels be weighted? MEF-SSIM of variants of the stack blend on
the validation stacks (the five Merianos three-exposure sets, never the Waterloo sequences the issue's goal is
measured on), the Mertens-style built-in prior and the plain mean beside them.

    python scripts/experiments/stack_base_variants.py [MODEL] [--data ../shared/data] [--size 512]

Variants change only how :func:`fusionfm.stacks.blend_stack` turns the network's logits into weights: the
strength of the base level's brighter-than-the-mean prior, an added well-exposedness term on the base level
(Mertens et al.: -(base - 0.5)^2 / (2 sigma^2), sigma = 0.2; the base band is the frame's local mean), and the
detail levels' activity strength.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import fusionfm.pipeline_fusionfm as pipeline_module
from fusionfm import FusionFMPipeline, FusionImageProcessor
from fusionfm.color import recombine_frames
from fusionfm.evaluation.mef_ssim import mef_ssim
from fusionfm.labels.priors import exposure_fusion_frames
from fusionfm.stacks import blend_stack
from fusionfm.tasks import get_task

VARIANTS = {
    "no well-exposedness (session 10)": {},
    "base strength 0": {"base_strength": 0.0},
    "well-exposed base": {"well_exposed": 1.0},
    "well-exposed base x0.25": {"well_exposed": 0.25},
    "well-exposed base x0.5": {"well_exposed": 0.5},
    "well-exposed base x0.75": {"well_exposed": 0.75},
    "well-exposed base x2": {"well_exposed": 2.0},
    "well-exposed base, strength 0": {"well_exposed": 1.0, "base_strength": 0.0},
    "well-exposed base x2, strength 0": {"well_exposed": 2.0, "base_strength": 0.0},
    "detail strength 32": {"detail_strength": 32.0},
    "detail 32, well-exposed base, strength 0": {"detail_strength": 32.0, "well_exposed": 1.0,
                                                 "base_strength": 0.0},
}


def variant_blend(learned_scales, base_strength=None, well_exposed=0.0, detail_strength=None):
    """blend_stack with the model's own MEF strengths (``learned_scales``, (L,)) changed as the variant says; the
    pipeline's own choice for stacks (base 0, well-exposedness 1 since session 11) is ignored."""
    def blend(frames, logits, gains, activity_scales=None, well_exposedness=0.0):
        scales = learned_scales.clone()
        if base_strength is not None:
            scales[-1] = base_strength
        if detail_strength is not None:
            scales[:-1] = detail_strength
        return blend_stack(frames, logits, gains, scales, well_exposedness=well_exposed)
    return blend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="fusionfm/default_model")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    processor = FusionImageProcessor()
    pipeline = FusionFMPipeline.from_pretrained(args.model)
    pipeline.set_progress_bar_config(disable=True)
    learned = pipeline.unet.activity_scales_for(torch.tensor([get_task("MEF").class_id]))[0].detach()
    scores: dict[str, list[float]] = {}
    for scene in sorted(p for p in (args.data / "MEF" / "Merianos").iterdir() if p.is_dir()):
        frames = [processor.load(path) for path in sorted(scene.glob("*.jpg"))]
        size = processor.processing_size(tuple(frames[0].shape[-2:]), args.size)
        frames = [processor.resize(frame[None], size)[0] for frame in frames]
        stack = torch.stack(frames)
        for name, options in VARIANTS.items():
            pipeline_module.blend_stack = variant_blend(learned, **options)
            fused = pipeline(frames, task="MEF", output_type="pt").images[0]
            scores.setdefault(name, []).append(mef_ssim(fused, stack))
        originals = [frame[None] for frame in frames]
        mertens = recombine_frames(exposure_fusion_frames(originals), originals)[0]
        scores.setdefault("exposure (built-in, Mertens-style)", []).append(mef_ssim(mertens, stack))
        scores.setdefault("mean", []).append(mef_ssim(stack.mean(dim=0), stack))
        print(scene.name, {k: round(v[-1], 4) for k, v in scores.items()}, flush=True)
    print("| variant | " + " | ".join(s.name for s in sorted((args.data / "MEF" / "Merianos").iterdir())
                                      if s.is_dir()) + " | mean |")
    for name, values in scores.items():
        print(f"| {name} | " + " | ".join(f"{v:.4f}" for v in values) + f" | **{sum(values) / len(values):.4f}** |")


if __name__ == "__main__":
    main()
