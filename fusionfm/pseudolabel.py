"""Build pseudo-labels for a task (stage 1 selection + stage 2 Fusion Refiner); the CLI of
:mod:`fusionfm.labels.builder`.

    python -m fusionfm.pseudolabel --data ../shared/data --task IVF --split train --out labels/IVF
    python -m fusionfm.pseudolabel --data ../shared/data --task MEF --synthetic --split test --out labels/MEF
    accelerate launch --num_processes 4 -m fusionfm.pseudolabel ...     (the pairs split between 4 processes)

Writes, under ``--out``: one label PNG per pair (``<dataset>/<stem>.png``), for synthetic pairs also their
sources and truth, ``labels.csv`` (every candidate's metrics and score, the chosen one, whether the refined
label was kept) and the refiner's decomposition network. A killed run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .distributed import process_state
from .labels.builder import LabelJob, build_labels, real_jobs, synthetic_jobs
from .labels.refiner import RefinerConfig
from .tasks import get_task


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fusionfm.pseudolabel", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path, help="data root in the layout of shared/data")
    parser.add_argument("--task", required=True, help="IVF, MIF, MIF-CT, MIF-PET, MIF-SPECT, MEF or MFF")
    parser.add_argument("--split", default="train")
    parser.add_argument("--out", required=True, type=Path, help="output folder (created; reused to resume)")
    parser.add_argument("--datasets", nargs="+", help="only these datasets (default: all of the task)")
    parser.add_argument("--synthetic", action="store_true",
                        help="MEF/MFF: label synthetic pairs made from natural/ photographs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic pairs")
    parser.add_argument("--limit", type=int, help="only the first N pairs (sorted by dataset and stem)")
    parser.add_argument("--no-external", action="store_true", help="ignore priors/<METHOD>/ folders")
    parser.add_argument("--regions", action="store_true",
                        help="add the region-level merge of the candidates to the pool (fusionfm.labels.regions)")
    parser.add_argument("--no-refine", action="store_true", help="stage 1 only: keep the selected labels as they are")
    parser.add_argument("--threshold", type=float, default=RefinerConfig.threshold, help="refiner threshold c")
    parser.add_argument("--strength", type=float, default=RefinerConfig.strength, help="refiner strength alpha")
    parser.add_argument("--refiner-steps", type=int, default=RefinerConfig.train_steps,
                        help="training steps of the decomposition network")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def _jobs(args: argparse.Namespace) -> list[LabelJob]:
    if args.synthetic:
        return synthetic_jobs(args.data, args.task, args.split, args.seed, args.limit)
    return real_jobs(args.data, args.task, args.split, args.datasets, not args.no_external, args.limit)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    try:
        get_task(args.task)
        jobs = _jobs(args)
        config = RefinerConfig(threshold=args.threshold, strength=args.strength, train_steps=args.refiner_steps)
        counts = build_labels(jobs, args.out, refine=not args.no_refine, config=config, progress=not args.no_progress,
                              regions=args.regions)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if process_state().is_main_process:
        print(f"{counts['labelled']} pairs labelled, {counts['already_done']} already done; labels and "
              f"{args.out / 'labels.csv'} in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
