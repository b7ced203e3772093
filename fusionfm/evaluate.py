"""Evaluate a model (or a folder of fused images) on a data set and rank it among other methods; the CLI of
:mod:`fusionfm.evaluation.ranking`.

    python -m fusionfm.evaluate --model DIR_OR_HUB_ID --data ../shared/data --task IVF --dataset VIFB \
        --split test --out results/IVF-VIFB
    python -m fusionfm.evaluate --fused some/method/outputs --data ../shared/data --task MFF --out DIR
    accelerate launch --num_processes 4 -m fusionfm.evaluate ...     (the pairs split between 4 processes)

writes, per data set: ``fused/<stem>.png``, ``per_pair.csv``, ``ranking.csv`` and ``ranking.md``. ``--detail-gain``
and ``--natural-exposure`` rank the model called with those settings (name it with ``--name``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .datasets import PairRecord, find_pairs
from .evaluation.ranking import evaluate_dataset


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fusionfm.evaluate", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", default=None, help="pipeline folder or Hub id (default: the bundled model)")
    source.add_argument("--fused", type=Path, default=None, help="evaluate a folder of fused images <stem>.*")
    parser.add_argument("--name", default=None, help="the evaluated method's name in the tables")
    parser.add_argument("--data", type=Path, required=True, help="the shared/data folder")
    parser.add_argument("--task", required=True, help="IVF, MIF, MIF-CT, MIF-PET, MIF-SPECT, MEF or MFF")
    parser.add_argument("--dataset", action="append", default=None, help="data set(s); default: all of the task")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=1, help="flow steps of the model")
    parser.add_argument("--detail-gain", type=float, default=None, help="the model's detail_gain (default: its own)")
    parser.add_argument("--natural-exposure", action="store_true", help="MEF: the model with natural_exposure=True")
    parser.add_argument("--limit", type=int, default=None, help="first N pairs of each data set")
    parser.add_argument("--no-builtin-priors", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    try:
        pairs = find_pairs(args.data, args.task, args.split, args.dataset)
        pipeline = None
        if args.fused is None:
            from .pipeline_fusionfm import FusionFMPipeline

            pipeline = FusionFMPipeline.from_pretrained(args.model)
            pipeline.set_progress_bar_config(disable=True)
            pipeline.check_options(args.task, args.steps, 0, 1, "pt", 0, args.detail_gain, args.natural_exposure, None)
            name = args.name or "FusionFM"
        else:
            if not args.fused.is_dir():
                raise FileNotFoundError(f"No folder of fused images at {args.fused}.")
            name = args.name or args.fused.name
        call_options = {key: value for key, value in (("detail_gain", args.detail_gain),
                                                      ("natural_exposure", args.natural_exposure)) if value}
        by_dataset: dict[str, list[PairRecord]] = {}
        for pair in pairs:
            by_dataset.setdefault(pair.dataset, []).append(pair)
        for dataset, group in by_dataset.items():
            out_dir = args.out / dataset if len(by_dataset) > 1 else args.out
            out_dir.mkdir(parents=True, exist_ok=True)
            rows = evaluate_dataset(group[: args.limit], out_dir, name, pipeline, args.fused, args.steps,
                                    not args.no_builtin_priors, not args.no_progress, call_options)
            if rows is None:  # another process than the main one of an accelerate launch
                continue
            ours = next(row for row in rows if row["method"] == name)
            print(f"{dataset}: {name} ranks {ours['position']} of {len(rows)} (mean rank {ours['mean_rank']:.2f} "
                  f"over {ours['pairs']} pairs); tables in {out_dir}")
    except (FileNotFoundError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
