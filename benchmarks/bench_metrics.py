"""Speed of fusionfm.metrics.fusion: median ms for all twelve metrics on one 640x480 triple, and per metric.

    python benchmarks/bench_metrics.py [--repeats 9]

Uses a real 640x480 IVF pair (MSRS) and its mean as the fused image when ../shared is there, else
random images of that size. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from fusionfm.evaluation import metrics
from fusionfm.evaluation.baseline import average_255

MSRS_PAIR = Path(__file__).resolve().parents[2] / "shared/data/IVF/MSRS/test/{}/00537D.png"
SINGLE = {"EN": metrics.entropy, "SD": metrics.standard_deviation, "SF": metrics.spatial_frequency,
          "AG": metrics.average_gradient}
WITH_SOURCES = {"MI": metrics.mutual_information, "SCD": metrics.scd, "VIF": metrics.vif, "Qabf": metrics.qabf,
                "SSIM": metrics.ssim, "MSE": metrics.mse, "CC": metrics.correlation_coefficient,
                "PSNR": metrics.psnr}


def triple() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if Path(str(MSRS_PAIR).format("ir")).is_file():
        from fusionfm import load_image

        a = metrics.to_gray_255(load_image(str(MSRS_PAIR).format("ir")))
        b = metrics.to_gray_255(load_image(str(MSRS_PAIR).format("vi")))
    else:
        rng = np.random.default_rng(0)
        a, b = (torch.from_numpy(rng.integers(0, 256, (1, 1, 480, 640)).astype(np.float64)) for _ in range(2))
    return average_255(a, b), a, b


def median_ms(function, repeats: int) -> float:
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    fused, a, b = triple()
    print(f"one {fused.shape[-1]}x{fused.shape[-2]} triple, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats} runs\n")
    print("| metric | ms |\n|---|---:|")
    all_twelve = median_ms(lambda: metrics.fusion_metrics(fused, a, b), args.repeats)
    print(f"| all twelve (fusion_metrics) | {all_twelve:.1f} |")
    for name, function in SINGLE.items():
        print(f"| {name} | {median_ms(lambda f=function: f(fused), args.repeats):.1f} |")
    for name, function in WITH_SOURCES.items():
        print(f"| {name} | {median_ms(lambda f=function: f(fused, a, b), args.repeats):.1f} |")


if __name__ == "__main__":
    main()
