"""Time and peak memory of fusing large pairs or stacks: 1, 4, 12 and 24 megapixels (real images upsampled).

    python benchmarks/bench_large.py [--model path/or/hub-id] [--megapixels 1 4 12 24] [--tile-size 1024] [--stack]

Each size runs in a fresh process (so the peak is its own): one IVF pair (RoadScene FLIR_00211), or with
``--stack`` a three-exposure MEF bracket (Merianos SeaRock), upsampled to the size at 4:3; the default tiling,
bf16 where native. Prints a Markdown table of seconds, seconds per megapixel (flat when time grows linearly with
pixels) and peak resident memory (VmHWM).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAIR = REPO.parent / "shared/data/IVF/RoadScene/test/{}/FLIR_00211.jpg"
BRACKET = REPO.parent / "shared/data/MEF/Merianos/SeaRock"

CHILD = """
import json, sys, time, torch, PIL.Image
from fusionfm import FusionFMPipeline
torch.set_num_threads(int(sys.argv[4]))
pipe = FusionFMPipeline.from_pretrained(sys.argv[1] or None)
pipe.set_progress_bar_config(disable=True)
megapixels = float(sys.argv[2])
width = int((megapixels * 1e6 * 4 / 3) ** 0.5)
height = int(width * 3 / 4)
if sys.argv[6] == "stack":
    from pathlib import Path
    frames = [PIL.Image.open(path).convert("RGB").resize((width, height), PIL.Image.BICUBIC)
              for path in sorted(Path(sys.argv[3]).glob("*.jpg"))]
    started = time.perf_counter()
    out = pipe(frames, task="MEF", tile_size=int(sys.argv[5]))
else:
    ir, vi = (PIL.Image.open(sys.argv[3].format(m)).resize((width, height), PIL.Image.BICUBIC) for m in ("ir", "vi"))
    started = time.perf_counter()
    out = pipe(ir, vi, task="IVF", tile_size=int(sys.argv[5]))
seconds = time.perf_counter() - started
peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:")).split()[1]
print(json.dumps({"width": width, "height": height, "seconds": seconds, "peak_mb": int(peak) / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="")
    parser.add_argument("--megapixels", type=float, nargs="+", default=[1, 4, 12, 24])
    parser.add_argument("--tile-size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--stack", action="store_true", help="a three-exposure MEF bracket instead of an IVF pair")
    args = parser.parse_args()
    what = "a three-exposure MEF bracket" if args.stack else "an IVF pair"
    print(f"{what}, tile size {args.tile_size}, {args.threads} threads\n")
    print("| megapixels | size | seconds | seconds per megapixel | peak memory (MB) |\n|---:|---|---:|---:|---:|")
    for megapixels in args.megapixels:
        source = BRACKET if args.stack else PAIR
        result = subprocess.run([sys.executable, "-c", CHILD, args.model, str(megapixels), str(source),
                                 str(args.threads), str(args.tile_size), "stack" if args.stack else "pair"],
                                capture_output=True, text=True, cwd=REPO)
        if result.returncode:
            print(f"| {megapixels:g} | failed: {result.stderr.strip().splitlines()[-1]} | | | |")
            continue
        row = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"| {megapixels:g} | {row['width']}x{row['height']} | {row['seconds']:.1f} | "
              f"{row['seconds'] / megapixels:.2f} | {row['peak_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
