"""Inference speed of FusionFMPipeline on one 640x480 pair: median ms per pair by steps and precision.

    python benchmarks/bench_inference.py                      # default preset, random weights
    python benchmarks/bench_inference.py --model path/or/hub-id --repeats 11
    python benchmarks/bench_inference.py --steps 1 --dtypes bf16 --compile   # also torch.compile against eager

Times the whole call (PIL in, PIL out: colour conversion, padding, network, colour back), as task ``--task``
(IVF by default). Speed does not depend on the weights, so a freshly initialised preset measures the shipped
architecture (its task gates are opened, so the U-Net runs as for a trained task). A model whose task is still at
its start (task gate 0, as after ``reset_task``) skips the U-Net: time such a model with ``--model``.
Beside the milliseconds: the time of a 2048^3 matrix product in the same precision, measured in the same run, and the
ratio (machines differ; the ratio says how well the network uses this one).
Prints a Markdown table; machines are shared, so quote medians over several repeats.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from torch.utils.flop_counter import FlopCounterMode

from fusionfm import FlowMatchFusionScheduler, FusionFMPipeline, build_unet, get_task, load_image
from fusionfm.pyramid import mean_levels

MSRS_PAIR = Path(__file__).resolve().parents[2] / "shared/data/IVF/MSRS/test/{}/00537D.png"


def benchmark_pair() -> tuple[PIL.Image.Image, PIL.Image.Image]:
    """A real 640x480 IVF pair (MSRS) when ../shared is there, else random images of that size."""
    if Path(str(MSRS_PAIR).format("ir")).is_file():
        return load_image(str(MSRS_PAIR).format("ir")), load_image(str(MSRS_PAIR).format("vi"))
    rng = np.random.default_rng(0)
    return (PIL.Image.fromarray(rng.integers(0, 256, (480, 640), dtype=np.uint8)),
            PIL.Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)))


def gflops_per_step(pipe: FusionFMPipeline, height: int = 480, width: int = 640) -> float:
    """GFLOPs of one U-Net evaluation on a (padded) height x width pair."""
    multiple = pipe.unet.size_multiple
    height, width = -(-height // multiple) * multiple, -(-width // multiple) * multiple
    x = torch.rand(1, 1, height, width)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        pipe.unet(x, x, x, torch.zeros(1), torch.zeros(1, dtype=torch.long))
    return counter.get_total_flops() / 1e9


def median_ms(pipe: FusionFMPipeline, pair, steps: int, dtype: str, repeats: int, warmup: int,
              task: str = "IVF") -> float:
    times = []
    for index in range(warmup + repeats):
        start = time.perf_counter()
        pipe(*pair, task=task, num_inference_steps=steps, compute_dtype=dtype)
        if index >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def matmul_ms(dtype: torch.dtype, repeats: int, size: int = 2048) -> float:
    """Median ms of one size^3 matrix product in ``dtype``: the machine's yardstick, timed in the same run."""
    left, right = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    times = []
    for index in range(repeats + 2):
        start = time.perf_counter()
        torch.mm(left, right)
        if index >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def breakdown_ms(pipe: FusionFMPipeline, pair, dtype: str, repeats: int) -> dict[str, float]:
    """Median ms of each stage of one one-step call, timed separately: canonicalise the inputs, luminance, pad,
    the network, crop, colour back, output conversion."""
    from fusionfm.color import luminance, recombine

    processor = pipe.image_processor
    compute = pipe._resolve_compute_dtype(dtype)
    policy = get_task("IVF").color_policy
    stages: dict[str, list[float]] = {}
    clock = [time.perf_counter()]

    def lap(name: str) -> None:
        now = time.perf_counter()
        stages.setdefault(name, []).append((now - clock[0]) * 1000)
        clock[0] = now

    for _ in range(repeats + 1):
        clock[0] = time.perf_counter()
        a, b = (processor.to_tensor_list(image)[0][None] for image in pair)
        lap("canonicalise inputs")
        y_a, y_b = luminance(a), luminance(b)
        lap("luminance")
        padded_a, box = processor.pad_to_multiple(y_a, pipe.unet.size_multiple, processor.config.border_margin)
        padded_b, _ = processor.pad_to_multiple(y_b, pipe.unet.size_multiple, processor.config.border_margin)
        lap("pad (mirrored margin)")
        x0 = (padded_a + padded_b) / 2
        fused = x0 + pipe._run_unet(pipe.unet, compute, x0, padded_a, padded_b, torch.zeros(1),
                                    torch.zeros(1, dtype=torch.long), mean_levels(y_a, y_b)).float()
        lap("network (U-Net and pyramid blend)")
        fused = processor.crop(fused, box).clamp(0, 1)
        lap("crop")
        colour = recombine(fused, a, b, policy)
        lap("colour back")
        processor.postprocess([colour[0]], "pil")
        lap("output conversion (to PIL)")
    return {name: statistics.median(times[1:]) for name, times in stages.items()}


def compiled_vs_eager(pipe: FusionFMPipeline, pair, dtype: str, repeats: int, cache_dir: str | None) -> str:
    """Compile for ``dtype`` (first call timed: compilation, or loading it from the cache), then one-step ms of
    the compiled and the eager U-Net, interleaved so that both see the same machine load."""
    start = time.perf_counter()
    pipe.compile_unet(dtype, cache_dir=cache_dir)
    first = time.perf_counter() - start
    compiled_ms, eager_ms = [], []
    for _ in range(repeats):
        compiled_ms.append(median_ms(pipe, pair, 1, dtype, 1, 1))
        pipe.disable_compile()
        eager_ms.append(median_ms(pipe, pair, 1, dtype, 1, 1))
        pipe.compile_unet(dtype, cache_dir=cache_dir, warm_up_size=None)  # the compiled code is reused
    compiled, eager = statistics.median(compiled_ms), statistics.median(eager_ms)
    return (f"{dtype}, compiled: first compilation {first:.0f} s; one step {compiled:.0f} ms compiled against "
            f"{eager:.0f} ms eager ({eager / compiled:.2f}x), interleaved, median of {repeats}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="pipeline folder or Hub id (default: a fresh U-Net of --preset)")
    parser.add_argument("--preset", default="default", help="U-Net preset when no --model is given")
    parser.add_argument("--task", default="IVF", help="task of the timed calls (the pair is MSRS's either way)")
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--breakdown", action="store_true", help="also time each stage of a one-step call")
    parser.add_argument("--compile", action="store_true",
                        help="also time torch.compile: first call and one step compiled against eager")
    parser.add_argument("--compile_cache", default=None, help="inductor cache folder (default ~/.cache/fusionfm)")
    args = parser.parse_args()

    if args.model:
        pipe = FusionFMPipeline.from_pretrained(args.model)
    else:
        torch.manual_seed(0)
        pipe = FusionFMPipeline(unet=build_unet(args.preset).eval(), scheduler=FlowMatchFusionScheduler())
        pipe.unet.to(memory_format=torch.channels_last)  # as from_pretrained does for the bf16 CPU path
        if pipe.unet.config.task_gates:  # a fresh model's closed gates skip the U-Net; time it as a trained task
            with torch.no_grad():
                pipe.unet.task_gate.fill_(1.0)
    pipe.set_progress_bar_config(disable=True)
    pair = benchmark_pair()
    parameters = sum(p.numel() for p in pipe.unet.parameters())
    print(f"model: {args.model or 'preset ' + args.preset}; {parameters / 1e6:.2f} M parameters; "
          f"{gflops_per_step(pipe):.1f} GFLOPs per step at 640x480; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; median of {args.repeats} runs after {args.warmup} warm-up runs\n")
    yardstick = {name: matmul_ms({"fp32": torch.float32, "bf16": torch.bfloat16}[name], args.repeats)
                 for name in args.dtypes if name in ("fp32", "bf16")}
    print(f"CPU: {cpu_name()}; a 2048^3 matrix product, median of {args.repeats}: "
          + ", ".join(f"{name} {ms:.1f} ms" for name, ms in yardstick.items()) + "\n")
    print("| steps | " + " | ".join(f"{dtype} ms/pair (x matmul)" for dtype in args.dtypes) + " |")
    print("|---:|" + "---:|" * len(args.dtypes))
    for steps in args.steps:
        cells = []
        for dtype in args.dtypes:
            ms = median_ms(pipe, pair, steps, dtype, args.repeats, args.warmup, args.task)
            cells.append(f"{ms:.0f} ({ms / yardstick[dtype]:.1f}x)" if dtype in yardstick else f"{ms:.0f}")
        print(f"| {steps} | " + " | ".join(cells) + " |", flush=True)
    if args.breakdown:
        for dtype in args.dtypes:
            stages = breakdown_ms(pipe, pair, dtype, args.repeats)
            print(f"\n{dtype}, one step, stage by stage (median ms): " + "; ".join(
                f"{name} {ms:.1f}" for name, ms in stages.items()) + f"; sum {sum(stages.values()):.1f}")
    if args.compile:
        for dtype in args.dtypes:
            print("\n" + compiled_vs_eager(pipe, pair, dtype, args.repeats, args.compile_cache), flush=True)


if __name__ == "__main__":
    main()
