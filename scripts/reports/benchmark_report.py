"""Collect the ranking tables that scripts/reproduce/benchmark.sh wrote into one Markdown report (stdout).

The summary of places, then SF, AG and Qabf against the best built-in prior's on each set (issue 14's clause), then
every data set's table.

Usage: python scripts/reports/benchmark_report.py OUT [--name FusionFM]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

CLAUSE = ("SF", "AG", "Qabf")


def _against_best_prior(ours: dict[str, str], rows: list[dict[str, str]], metric: str) -> str:
    """"ours (best builtin value name, +x.x %)" for one metric of a ranking table."""
    best = max((row for row in rows if row["method"].startswith("builtin:")), key=lambda row: float(row[metric]))
    value, reference = float(ours[metric]), float(best[metric])
    mark = "**" if value >= reference else ""
    return (f"{mark}{value:.3f}{mark} ({reference:.3f} {best['method'].removeprefix('builtin:')}, "
            f"{100 * (value / reference - 1):+.1f} %)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--name", default="FusionFM")
    args = parser.parse_args()
    summary = ["| task | data set | pairs | FusionFM's place | mean rank | best method (mean rank) |",
               "|---|---|---:|---:|---:|---|"]
    clause = ["| data set | SF (best built-in) | AG (best built-in) | Qabf (best built-in) |", "|---|---|---|---|"]
    details = []
    for ranking in sorted(set(args.out.glob("*/**/ranking.csv"))):
        with ranking.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        ours = next(row for row in rows if row["method"] == args.name)
        task = ranking.relative_to(args.out).parts[0]
        with (ranking.parent / "per_pair.csv").open(newline="") as handle:
            dataset = next(csv.DictReader(handle))["dataset"]
        best = rows[0] if rows[0]["method"] != args.name else rows[1]
        summary.append(f"| {task} | {dataset} | {ours['pairs']} | {ours['position']} of {len(rows)} | "
                       f"{float(ours['mean_rank']):.2f} | {best['method']} ({float(best['mean_rank']):.2f}) |")
        cells = [_against_best_prior(ours, rows, metric) for metric in CLAUSE]
        clause.append(f"| {dataset} | " + " | ".join(cells) + " |")
        details.append((ranking.parent / "ranking.md").read_text())
    print("\n".join(summary) + "\n\n" + "\n".join(clause) + "\n\n" + "\n".join(details))


if __name__ == "__main__":
    main()
