"""Speed of the built-in prior fusion methods on one 640x480 pair (colour result included).

    python benchmarks/bench_priors.py [--repeats 5]

Goal: all built-in priors together at most 1 s per 640x480 pair on 2 cores. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from bench_inference import benchmark_pair

from fusionfm import FusionImageProcessor
from fusionfm.priors import PRIORS, run_prior


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    processor = FusionImageProcessor()
    a, b = (processor.to_tensor_list(image)[0][None] for image in benchmark_pair())
    print(f"one {a.shape[-1]}x{a.shape[-2]} IVF pair, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats} runs\n")
    print("| prior | ms |\n|---|---:|")
    total = 0.0
    for name in PRIORS:
        run_prior(name, a, b, "IVF")
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            run_prior(name, a, b, "IVF")
            times.append(time.perf_counter() - start)
        median = statistics.median(times) * 1000
        total += median
        print(f"| {name} | {median:.1f} |")
    print(f"| **all {len(PRIORS)} together** | **{total:.0f}** |")


if __name__ == "__main__":
    main()
