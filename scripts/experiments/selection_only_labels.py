"""Stage-1-only copy of a pseudo-label folder, for the "without the refiner's labels" ablation.

Every label the Fusion Refiner changed (``refined`` = 1 in labels.csv) is replaced by the output of the prior
that stage 1 selected, recomputed from the sources; every other label and the synthetic sources are copied.
With ``--prior NAME`` every label is replaced by that built-in prior's output instead (one label style for the
whole task: the "consistent labels" experiment of issue 14). The result trains with
``training/train.py --labels TASK=OUT`` like the original.

Usage: python scripts/experiments/selection_only_labels.py LABELS_DIR OUT_DIR [--data ../shared/data] [--prior NAME]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch

from fusionfm.image_processor import FusionImageProcessor
from fusionfm.priors import PRIORS, run_prior
from fusionfm.training.datasets import LabelledPair, relabel_folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("labels_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--prior", choices=sorted(PRIORS), help="relabel every pair with this built-in prior")
    args = parser.parse_args()

    with (args.labels_dir / "labels.csv").open(newline="") as handle:
        selected = {(row["dataset"], row["stem"]): row for row in csv.DictReader(handle) if row["selected"] == "1"}
    processor = FusionImageProcessor()

    def recomputed_prior(pair: LabelledPair) -> torch.Tensor | None:
        row = selected[(pair.dataset, pair.stem)]
        prior = args.prior or (row["candidate"] if row["refined"] == "1" else None)
        if prior is None:
            return None
        if prior not in PRIORS:
            raise SystemExit(f"{pair.dataset}/{pair.stem}: selected {prior!r} is not a built-in prior.")
        image_a, image_b = processor.load(pair.path_a), processor.load(pair.path_b)
        return run_prior(prior, image_a[None], image_b[None], pair.task)[0]

    count, recomputed = relabel_folder(args.labels_dir, args.out_dir, args.data, recomputed_prior)
    replaced = f"replaced by {args.prior}" if args.prior else "refined ones replaced by their stage-1 selection"
    print(f"{count} labels in {args.out_dir}; {recomputed} {replaced}.")


if __name__ == "__main__":
    main()
