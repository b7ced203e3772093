"""Collect the ranking tables that scripts/reproduce/benchmark.sh wrote into one Markdown report (stdout).

Usage: python scripts/reports/benchmark_report.py OUT [--name FusionFM]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--name", default="FusionFM")
    args = parser.parse_args()
    summary = ["| task | data set | pairs | FusionFM's place | mean rank | best method (mean rank) |",
               "|---|---|---:|---:|---:|---|"]
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
        details.append((ranking.parent / "ranking.md").read_text())
    print("\n".join(summary) + "\n\n" + "\n".join(details))


if __name__ == "__main__":
    main()
