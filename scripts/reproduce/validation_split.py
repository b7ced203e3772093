"""Write fusionfm/evaluation/validation_split.csv: the fixed validation pairs every recipe choice is made on.

    python scripts/reproduce/validation_split.py [--data ../shared/data]

The rule: every 8th training pair of each IVF/MIF data set (sorted by stem, starting with the 4th), every 8th
synthetic training photograph for MEF and MFF (the same pairs the label builder synthesises, seed 0), and the
first and last frames of the real three-exposure (Merianos) and three-focus (LytroTriple) sets, which no test
split holds. Training leaves these pairs out (``training/train.py --validation_split``); the test splits stay for
the final tables only.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from fusionfm.atomic import write_csv_atomic
from fusionfm.datasets import find_pairs

OUT = Path(__file__).resolve().parents[2] / "fusionfm" / "evaluation" / "validation_split.csv"
COLUMNS = ["task", "dataset", "stem", "path_a", "path_b"]
EVERY, OFFSET = 8, 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()
    rows = []
    for family in ("IVF", "MIF"):
        by_dataset: dict[str, list] = {}
        for pair in find_pairs(args.data, family, "train"):
            by_dataset.setdefault(pair.dataset, []).append(pair)
        for dataset, pairs in sorted(by_dataset.items()):
            for pair in pairs[OFFSET::EVERY] or pairs[:1]:
                rows.append({"task": pair.task.name, "dataset": dataset, "stem": pair.stem,
                             "path_a": pair.path_a.relative_to(args.data).as_posix(),
                             "path_b": pair.path_b.relative_to(args.data).as_posix()})
    with (args.data / "natural.csv").open(newline="") as handle:
        photos = sorted((row for row in csv.DictReader(handle) if row["split"] == "train"), key=lambda r: r["stem"])
    for family in ("MEF", "MFF"):
        rows += [{"task": family, "dataset": f"synthetic-{row['dataset']}", "stem": row["stem"], "path_a": "",
                  "path_b": ""} for row in photos[OFFSET::EVERY]]
    for family, folder in (("MEF", "MEF/Merianos"), ("MFF", "MFF/LytroTriple")):
        for scene in sorted(p for p in (args.data / folder).iterdir() if p.is_dir()):
            frames = sorted(scene.glob("*.jpg")) + sorted(scene.glob("*.png"))
            rows.append({"task": family, "dataset": Path(folder).name, "stem": scene.name,
                         "path_a": frames[0].relative_to(args.data).as_posix(),
                         "path_b": frames[-1].relative_to(args.data).as_posix()})
    write_csv_atomic(OUT, rows, COLUMNS)
    print(f"{len(rows)} validation pairs in {OUT}")


if __name__ == "__main__":
    main()
