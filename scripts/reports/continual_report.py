"""Markdown tables of a continual-learning comparison: R[i][j] per run, then ACC and BWT side by side with their
mean and spread over seeds.

    python scripts/reports/continual_report.py OUT_DIR      (OUT_DIR/<variant>-<seed>/continual.csv from train.py)
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

VARIANTS = {"naive": "naive sequential", "ewc": "EWC only", "replay": "replay only",
            "continual": "EWC + replay (the shipped recipe)", "joint": "joint (all tasks at once)"}


def read_run(folder: Path) -> tuple[list[str], list[list[str]], str, str]:
    with (folder / "continual.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    tasks = rows[0][1:]
    matrix = [row for row in rows[1:] if row[0] not in ("ACC", "BWT")]
    values = {row[0]: row[1] for row in rows[1:] if row[0] in ("ACC", "BWT")}
    return tasks, matrix, values["ACC"], values["BWT"]


def main(out_dir: str) -> None:
    root = Path(out_dir)
    summary = ["| variant | seed | ACC | BWT | seconds (last resumed part) |", "|---|---:|---:|---:|---:|"]
    spread = ["| variant | seeds | ACC mean | ACC spread | BWT mean |", "|---|---:|---:|---:|---:|"]
    for name, title in VARIANTS.items():
        runs = sorted(path for path in root.glob(f"{name}-*") if (path / "continual.csv").is_file())
        accuracies, backwards = [], []
        for run in runs:
            tasks, matrix, accuracy, backward = read_run(run)
            seconds = json.loads((run / "training_summary.json").read_text()).get("seconds_this_run", "")
            seed = run.name.rsplit("-", 1)[1]
            print(f"### {title}, seed {seed}\n\n| after \\ on | " + " | ".join(tasks) + " |\n"
                  + "|---" * (len(tasks) + 1) + "|")
            for row in matrix:
                print(f"| {row[0]} | " + " | ".join(row[1:]) + " |")
            print()
            summary.append(f"| {title} | {seed} | {accuracy} | {backward or 'n/a'} | {seconds} |")
            accuracies.append(float(accuracy))
            backwards.append(float(backward) if backward else float("nan"))
        if accuracies:
            spread.append(f"| {title} | {len(accuracies)} | {sum(accuracies) / len(accuracies):.4f} | "
                          f"{max(accuracies) - min(accuracies):.4f} | {sum(backwards) / len(backwards):.4f} |")
    print("### Summary\n")
    print("\n".join(summary))
    print()
    print("\n".join(spread))


if __name__ == "__main__":
    main(sys.argv[1])
