"""Training records: the per-step CSV log and the continual-learning quality matrix R[i][j] with ACC/BWT."""

from __future__ import annotations

import csv
from pathlib import Path

from ..atomic import write_csv_atomic
from .continual import accuracy_and_backward_transfer

LOG_COLUMNS = ["step", "task", "loss", "flow_loss", "ewc_penalty", "lr", "replayed", "seconds"]


class CsvLog:
    """``logs/train_log.csv``; on resume, rows after the resumed step are dropped (atomically)."""

    def __init__(self, path: Path, resume_step: int) -> None:
        self.path = path
        rows = []
        if path.is_file():
            with path.open(newline="") as handle:
                rows = [row for row in csv.DictReader(handle) if row.get("step", "").isdigit()
                        and int(row["step"]) <= resume_step]
        write_csv_atomic(path, rows, LOG_COLUMNS)

    def write(self, row: dict) -> None:
        with self.path.open("a", newline="") as handle:
            csv.DictWriter(handle, LOG_COLUMNS).writerow(row)


def accuracy_and_transfer(quality: list[list[float]], tasks: list[str]) -> tuple[float, float | None]:
    """(ACC, BWT) of R; for a matrix that is not square (joint training: one row) ACC is the row's mean and
    BWT is None."""
    if len(quality) == len(tasks):
        return accuracy_and_backward_transfer(quality)
    return sum(quality[-1]) / len(tasks), None


def write_quality_csv(path: Path, quality: list[list[float]], stage_names: list[str],
                      tasks: list[str]) -> tuple[float, float | None]:
    """R[i][j] (one row per stage) with ACC and BWT; returns (ACC, BWT)."""
    accuracy, backward = accuracy_and_transfer(quality, tasks)
    rows = [["after", *tasks]]
    rows += [[name, *(f"{value:.4f}" for value in row)] for name, row in zip(stage_names, quality, strict=True)]
    rows += [["ACC", f"{accuracy:.4f}"], ["BWT", "" if backward is None else f"{backward:.4f}"]]
    write_csv_atomic(path, rows)
    return accuracy, backward


def quality_markdown(quality: list[list[float]], stage_names: list[str], tasks: list[str]) -> str:
    """R[i][j] as a Markdown table, with ACC and BWT once every task has its stage."""
    if not quality:
        return "Not evaluated (`--eval_pairs 0`)."
    lines = ["| after | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(f"{value:.3f}" for value in row) + " |"
              for name, row in zip(stage_names, quality, strict=True)]
    if len(quality) == len(tasks):
        accuracy, backward = accuracy_and_backward_transfer(quality)
        lines.append(f"\nACC = {accuracy:.3f}, BWT = {backward:+.3f}.")
    return "\n".join(lines)
