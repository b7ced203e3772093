"""Qabf against the rest: the activity prior's detail choice made per band or from one consistent map.

    python scripts/experiments/detail_choice_variants.py [--task IVF] [--strengths 16 64] [--sigmas 2]
        [--mixes 1 0.75 0.5] [--gains 1.04 1.1 | --gain_profiles 1.04,1.04,1.04,1.1] [--epsilons 0.001 0.03]
        [--base_strengths 0 32] [--resolution 0] [--no_baselines] [--data ../shared/data]

The prior alone (logits 0) on a task's validation pairs, with the default preset's base rule and strength. Per
band (the head's rule): each detail coefficient leans to the source of larger magnitude. Consistent: every detail
level takes its choice from one map, the finest band's magnitudes smoothed by a Gaussian of ``sigma`` pixels (as
GFF decides from smoothed saliency; ``epsilon`` in its denominator evens it where both are weak), mixed with the
per-band choice by ``mix`` (1: the map alone); one variant per combination of ``--strengths``, ``--sigmas``,
``--mixes``, ``--gains`` (every detail level's; or ``--gain_profiles``, one gain per detail level, finest first),
``--epsilons`` and ``--base_strengths`` (the strength of the preset's base rule; 0 averages the bases; default the
preset's). Prints the benchmark-aligned score and the mean of the nine ranked metrics of each variant and of the
best built-in prior per metric (docs/quality.md, sessions 13 to 17). The pairs' long side is resized to
``--resolution`` (default 256, as in training; 0: each pair's own size, as the benchmarks and users fuse).
"""

from __future__ import annotations

import argparse

import torch

from fusionfm import UNET_PRESETS
from fusionfm.evaluation.ranking import RANKED_METRICS, ranked_metrics
from fusionfm.evaluation.validation import benchmark_score, best_prior_mean, validation_pairs
from fusionfm.metrics.fusion import to_gray_255
from fusionfm.pyramid import ACTIVITY_EPSILON, CONSISTENT_SIGMA, activity_fusion
from fusionfm.tasks import get_task
from fusionfm.unet import start_prior

SHOWN = RANKED_METRICS
BASELINES = {  # name: (detail strength, gain, consistent-map sigma or 0, mix, epsilon); gain None: the preset's
    "per band, strength 16, gain 1": (16.0, 1.0, 0.0, 0.0, ACTIVITY_EPSILON),
    "per band, strength 16, the preset's gain": (16.0, None, 0.0, 0.0, ACTIVITY_EPSILON),
}


def fuse(a: torch.Tensor, b: torch.Tensor, base_strength: float, salient: bool, strength: float,
         gains: tuple[float, ...], sigma: float, mix: float, epsilon: float = ACTIVITY_EPSILON,
         sharper: bool = False) -> torch.Tensor:
    """The head's activity prior (logits 0) with the consistent map's ``sigma`` free (the head fixes it; 0: none);
    ``gains`` one per detail level, finest first (their number sets the levels)."""
    scales = torch.tensor([strength] * len(gains) + [base_strength])
    return activity_fusion(a, b, scales, torch.tensor(gains), salient, mix if sigma else 0.0, epsilon,
                           sigma or CONSISTENT_SIGMA, sharper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="IVF")
    parser.add_argument("--strengths", type=float, nargs="+", default=[16.0, 64.0])
    parser.add_argument("--sigmas", type=float, nargs="+", default=[2.0])
    parser.add_argument("--mixes", type=float, nargs="+", default=[1.0, 0.75, 0.5])
    parser.add_argument("--gains", type=float, nargs="+", default=[1.04, 1.1])
    parser.add_argument("--gain_profiles", type=lambda text: tuple(float(v) for v in text.split(",")), nargs="+",
                        default=None, help="instead of --gains: per-level detail gains, comma-separated, finest first")
    parser.add_argument("--epsilons", type=float, nargs="+", default=[ACTIVITY_EPSILON],
                        help="the consistent map's denominator epsilon (larger: average where both are weak)")
    parser.add_argument("--base_strengths", type=float, nargs="+", default=None,
                        help="strengths of the preset's base rule (default: the preset's own)")
    parser.add_argument("--resolution", type=int, default=256, help="long side of the pairs (0: their own size)")
    parser.add_argument("--no_baselines", action="store_true", help="only the consistent-map variants")
    parser.add_argument("--data", default="../shared/data")
    args = parser.parse_args()
    start = start_prior(UNET_PRESETS["default"], get_task(args.task).class_id, args.task)
    salient, sharper = start["salient_base"], start["sharper_base"]
    base_strengths = args.base_strengths or [float(start["scales"][-1])]
    levels = len(start["gains"])
    preset_gains = tuple(start["gains"].tolist())
    profiles = args.gain_profiles or [(gain,) * levels for gain in args.gains]
    if any(len(profile) != levels for profile in profiles):
        parser.error(f"--gain_profiles needs {levels} gains each (one per detail level).")
    variants = {} if args.no_baselines else {
        name: (strength, preset_gains if gain is None else (gain,) * levels, sigma, mix, eps, base_strengths[0])
        for name, (strength, gain, sigma, mix, eps) in BASELINES.items()}
    variants.update({f"consistent sigma {sigma:g}, strength {strength:g}, mix {mix:g}, "
                     f"gains {'/'.join(f'{gain:g}' for gain in gains)}, eps {eps:g}, base {base:g}":
                     (strength, gains, sigma, mix, eps, base) for strength in args.strengths
                     for sigma in args.sigmas for mix in args.mixes for gains in profiles for eps in args.epsilons
                     for base in base_strengths})
    pairs = validation_pairs(args.data, args.task, args.resolution or None)
    print(f"| {args.task}, prior alone ({len(pairs)} pairs) | score | " + " | ".join(SHOWN) + " |")
    print("|---|---:|" + "---:|" * len(SHOWN))
    best = [best_prior_mean(pairs, metric) for metric in SHOWN]
    print("| best built-in prior per metric | | " + " | ".join(f"{value:.3f} ({name})" for name, value in best) + " |")
    for name, (strength, gains, sigma, mix, epsilon, base_strength) in variants.items():
        score, totals = 0.0, dict.fromkeys(SHOWN, 0.0)
        for pair in pairs:
            fused = fuse(pair.image_a, pair.image_b, base_strength, salient, strength, gains, sigma, mix, epsilon,
                         sharper=sharper)
            score += benchmark_score(fused, pair) / len(pairs)
            metrics = ranked_metrics(fused, to_gray_255(pair.image_a), to_gray_255(pair.image_b))
            for metric in SHOWN:
                totals[metric] += metrics[metric] / len(pairs)
        print(f"| {name} | {score:.3f} | " + " | ".join(f"{totals[m]:.3f}" for m in SHOWN) + " |", flush=True)


if __name__ == "__main__":
    main()
