"""Before/after crops of fusing a misregistered focus stack (FocusStackPCB frames 0, 3 and 6) without and
with ``align=True``, for docs/stacks.md.

    python scripts/reports/alignment_figure.py [MODEL] [--data ../shared/data] [--out docs/figures/alignment.png]

Two 1:1 crops (400 px) of the full-resolution fusion, side by side: as given (ghosts where the magnification
drifts) and aligned. Prints each frame's displacement against the middle frame before alignment.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import PIL.Image
import PIL.ImageDraw

from fusionfm import FusionFMPipeline, MisregistrationWarning
from fusionfm.atomic import save_png_atomic

CROP = 400


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=None)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("docs/figures/alignment.png"))
    args = parser.parse_args()
    pipeline = FusionFMPipeline.from_pretrained(args.model)
    pipeline.set_progress_bar_config(disable=True)
    frames = [PIL.Image.open(args.data / "MFF" / "FocusStackPCB" / f"{index:02d}.jpg") for index in (0, 3, 6)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MisregistrationWarning)
        as_given = pipeline(frames, task="MFF").images[0]
    for warning in caught:
        print("warning:", warning.message)
    aligned = pipeline(frames, task="MFF", align=True).images[0]
    # The header pins near the right edge, where the magnification drift moves content most.
    box = (1560, 780, 1560 + CROP, 780 + CROP)
    panel = PIL.Image.new("RGB", (2 * CROP + 10, CROP + 24), "white")
    draw = PIL.ImageDraw.Draw(panel)
    for column, (title, image) in enumerate((("as given (ghosts)", as_given), ("align=True", aligned))):
        panel.paste(image.crop(box), (column * (CROP + 10), 24))
        draw.text((column * (CROP + 10) + 4, 4), title, fill="black")
    save_png_atomic(panel, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
