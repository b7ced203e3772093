"""Stage-1-only copy of a pseudo-label folder, for the "without the refiner's labels" ablation.

Every label the Fusion Refiner changed (``refined`` = 1 in labels.csv) is replaced by the output of the prior
that stage 1 selected, recomputed from the sources; every other label and the synthetic sources are copied.
The result trains with ``training/train.py --labels TASK=OUT`` like the original.

Usage: python scripts/experiments/selection_only_labels.py LABELS_DIR OUT_DIR [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

from fusionfm.atomic import save_png_atomic
from fusionfm.image_processor import FusionImageProcessor
from fusionfm.labels.priors import PRIORS, run_prior
from fusionfm.training.datasets import LabelledPairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("labels_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()

    with (args.labels_dir / "labels.csv").open(newline="") as handle:
        selected = {(row["dataset"], row["stem"]): row for row in csv.DictReader(handle) if row["selected"] == "1"}
    pairs = LabelledPairs(args.labels_dir, args.data)
    processor = FusionImageProcessor()
    recomputed = 0
    for pair in pairs.pairs:
        row = selected[(pair.dataset, pair.stem)]
        target = args.out_dir / pair.dataset / f"{pair.stem}.png"
        if target.is_file():
            continue
        if row["refined"] == "1":
            if row["candidate"] not in PRIORS:
                raise SystemExit(f"{pair.dataset}/{pair.stem}: selected {row['candidate']!r} is not a built-in prior.")
            image_a, image_b = processor.load(pair.path_a), processor.load(pair.path_b)
            save_png_atomic(run_prior(row["candidate"], image_a[None], image_b[None], pair.task)[0], target)
            recomputed += 1
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(pair.path_label, target)
    for sources in args.labels_dir.glob("*/sources"):
        shutil.copytree(sources, args.out_dir / sources.parent.name / "sources", dirs_exist_ok=True)
    shutil.copyfile(args.labels_dir / "labels.csv", args.out_dir / "labels.csv")
    print(f"{len(pairs)} labels in {args.out_dir}; {recomputed} refined ones replaced by their stage-1 selection.")


if __name__ == "__main__":
    main()
