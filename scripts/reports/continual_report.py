"""Markdown tables of a continual-learning comparison: R[i][j] per variant, then ACC and BWT side by side.

    python scripts/reports/continual_report.py OUT_DIR      (OUT_DIR/<variant>/continual.csv from training/train.py)
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

VARIANTS = {"naive": "naive sequential", "ewc": "EWC only", "replay": "replay only", "ewc_replay": "EWC + replay",
            "joint": "joint (all tasks at once)"}


def read_run(folder: Path) -> tuple[list[str], list[list[str]], str, str]:
    with (folder / "continual.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    tasks = rows[0][1:]
    matrix = [row for row in rows[1:] if row[0] not in ("ACC", "BWT")]
    values = {row[0]: row[1] for row in rows[1:] if row[0] in ("ACC", "BWT")}
    return tasks, matrix, values["ACC"], values["BWT"]


def main(out_dir: str) -> None:
    root = Path(out_dir)
    summary = ["| variant | ACC | BWT | seconds |", "|---|---|---|---|"]
    for name, title in VARIANTS.items():
        if not (root / name / "continual.csv").is_file():
            continue
        tasks, matrix, accuracy, backward = read_run(root / name)
        seconds = json.loads((root / name / "training_summary.json").read_text()).get("seconds_this_run", "")
        print(f"### {title}\n\n| after \\ on | " + " | ".join(tasks) + " |\n" + "|---" * (len(tasks) + 1) + "|")
        for row in matrix:
            print(f"| {row[0]} | " + " | ".join(row[1:]) + " |")
        print()
        summary.append(f"| {title} | {accuracy} | {backward or 'n/a'} | {seconds} |")
    print("### Summary\n")
    print("\n".join(summary))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
