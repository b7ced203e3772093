"""How should a stack's base level and detail levels be weighted? MEF-SSIM of variants of the stack blend on
validation stacks (never the Waterloo sequences the issue's goal is measured on), the Mertens-style built-in prior
and the plain mean beside them.

    python scripts/experiments/stack_base_variants.py [MODEL] [--data ../shared/data] [--size 512]
        [--stacks merianos|synthetic] [--frames 3 5 9] [--photos 6] [--only NAME_PART ...]

Stacks: the five Merianos three-exposure sets, or synthetic brackets of 3 to N frames (``--frames``) made from the
first ``--photos`` BSDS500 train photographs (:func:`fusionfm.synthetic.synthesize_bracket`, +-3 EV).

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
from fusionfm.metrics.mef_ssim import mef_ssim
from fusionfm.priors import exposure_fusion_frames
from fusionfm.stacks import blend_stack
from fusionfm.synthetic import SyntheticPairs, pair_generator, synthesize_bracket
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
    "shipped, detail gains 1": {"well_exposed": 1.0, "base_strength": 0.0, "unit_gains": True},
    "shipped + well-exposedness on detail levels x0.5": {"well_exposed": 1.0, "base_strength": 0.0,
                                                         "detail_well_exposed": 0.5},
    "shipped + well-exposedness on detail levels x1": {"well_exposed": 1.0, "base_strength": 0.0,
                                                       "detail_well_exposed": 1.0},
    "shipped, detail strength 8": {"well_exposed": 1.0, "base_strength": 0.0, "detail_strength": 8.0},
    "shipped, detail strength 4": {"well_exposed": 1.0, "base_strength": 0.0, "detail_strength": 4.0},
    **{f"shipped, detail strength {strength:g}, well-exposed detail x{weight:g}": {
        "well_exposed": 1.0, "base_strength": 0.0, "detail_strength": strength, "detail_well_exposed": weight}
       for strength in (0.0, 2.0, 4.0, 8.0) for weight in (1.0, 2.0, 4.0)},
}


def variant_blend(learned_scales, base_strength=None, well_exposed=0.0, detail_strength=None, unit_gains=False,
                  detail_well_exposed=0.0):
    """blend_stack with the model's own MEF strengths (``learned_scales``, (L,)) changed as the variant says; the
    pipeline's own choices for stacks (base 0 and well-exposedness 1 since session 11; detail strength 4 and
    well-exposedness 1 on the detail levels since session 12) are ignored."""
    def blend(frames, logits, gains, activity_scales=None, well_exposedness=0.0, detail_well_exposedness=0.0):
        scales = learned_scales.clone()
        if base_strength is not None:
            scales[-1] = base_strength
        if detail_strength is not None:
            scales[:-1] = detail_strength
        if unit_gains:
            gains = torch.ones_like(gains)
        return blend_stack(frames, logits, gains, scales, well_exposedness=well_exposed,
                           detail_well_exposedness=detail_well_exposed)
    return blend


def merianos_stacks(data: Path):
    """(name, [frame (C, H, W)]) of the five Merianos three-exposure sets."""
    processor = FusionImageProcessor()
    for scene in sorted(p for p in (data / "MEF" / "Merianos").iterdir() if p.is_dir()):
        yield scene.name, [processor.load(path) for path in sorted(scene.glob("*.jpg"))]


def synthetic_stacks(data: Path, frame_counts: list[int], photos: int):
    """(name, [frame (3, H, W)]) synthetic brackets of each length in ``frame_counts`` per photograph."""
    photographs = SyntheticPairs(data, "MEF", split="train", limit=photos)
    for index in range(len(photographs)):
        stem = photographs.rows[index]["stem"]
        for count in frame_counts:
            bracket = synthesize_bracket(photographs.photo(index), pair_generator(0, f"{stem}-{count}"), count)
            yield f"{stem}x{count}", list(bracket)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="fusionfm/default_model")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--stacks", choices=["merianos", "synthetic"], default="merianos")
    parser.add_argument("--frames", type=int, nargs="+", default=[3, 5, 9])
    parser.add_argument("--photos", type=int, default=6)
    parser.add_argument("--only", nargs="+", help="run only the variants whose names contain one of these")
    args = parser.parse_args()
    processor = FusionImageProcessor()
    pipeline = FusionFMPipeline.from_pretrained(args.model)
    pipeline.set_progress_bar_config(disable=True)
    learned = pipeline.unet.activity_scales_for(torch.tensor([get_task("MEF").class_id]))[0].detach()
    scores: dict[str, list[float]] = {}
    names = []
    stacks = (merianos_stacks(args.data) if args.stacks == "merianos"
              else synthetic_stacks(args.data, args.frames, args.photos))
    for stack_name, frames in stacks:
        names.append(stack_name)
        size = processor.processing_size(tuple(frames[0].shape[-2:]), args.size)
        frames = [processor.resize(frame[None], size)[0] for frame in frames]
        stack = torch.stack(frames)
        for variant, options in VARIANTS.items():
            if args.only and not any(part in variant for part in args.only):
                continue
            pipeline_module.blend_stack = variant_blend(learned, **options)
            fused = pipeline(frames, task="MEF", output_type="pt").images[0]
            scores.setdefault(variant, []).append(mef_ssim(fused, stack))
        originals = [frame[None] for frame in frames]
        mertens = recombine_frames(exposure_fusion_frames(originals), originals)[0]
        scores.setdefault("exposure (built-in, Mertens-style)", []).append(mef_ssim(mertens, stack))
        scores.setdefault("mean", []).append(mef_ssim(stack.mean(dim=0), stack))
        print(stack_name, {k: round(v[-1], 4) for k, v in scores.items()}, flush=True)
    print("| variant | " + " | ".join(names) + " | mean |")
    for name, values in scores.items():
        print(f"| {name} | " + " | ".join(f"{v:.4f}" for v in values) + f" | **{sum(values) / len(values):.4f}** |")


if __name__ == "__main__":
    main()
