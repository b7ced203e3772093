"""How much tiling changes a fusion: the 1200x800 MEF example fused in one piece and in 512/768/1024-px tiles (fp32).

    python scripts/experiments/tile_consistency.py [MODEL]

Prints the mean and 99th-percentile absolute difference in grey levels (0-255) per tile size.
"""

from __future__ import annotations

import sys

import torch

from fusionfm import FusionFMPipeline, load_image

EXAMPLE = "examples/MEF/MEFB_ICCV_11"


def main() -> None:
    pipe = FusionFMPipeline.from_pretrained(sys.argv[1] if len(sys.argv) > 1 else "fusionfm/default_model")
    pipe.set_progress_bar_config(disable=True)
    under, over = load_image(EXAMPLE + "_under.jpg"), load_image(EXAMPLE + "_over.jpg")
    whole = pipe(under, over, task="MEF", tile_size=0, output_type="pt", compute_dtype="fp32").images[0]
    for tile in (512, 768, 1024):
        tiled = pipe(under, over, task="MEF", tile_size=tile, output_type="pt", compute_dtype="fp32").images[0]
        difference = (tiled - whole).abs() * 255
        p99 = difference.flatten().quantile(0.99)
        print(f"{tile}-px tiles: mean {difference.mean():.2f}, p99 {p99:.2f} grey levels")


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
