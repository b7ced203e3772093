"""Synthetic multi-exposure (MEF) and multi-focus (MFF) pairs with a known ground truth.

Made from single sharp, well-exposed photographs (``shared/data/natural``). Every pair is a pure
function of (photograph, seed, stem), so a data set can be rebuilt bit for bit.

- MEF: the photograph is linearised (gamma 2.2), exposed down and up by 1.5-3 EV with a smooth
  random spatial gain (+-0.5 EV, so regions darken or brighten differently), given shot and read
  noise, clipped, re-encoded with a camera-like S-shaped tone curve and quantised to 8 bits. The
  range and the curve make the pairs as hard as real ones: on 20 BSDS train pairs 32 % of the
  over-exposed pixels are >= 250 and 25 % of the under-exposed ones <= 10 (MEFB and SICE: 34 % and
  34 %); milder brackets make pairs whose plain average is nearly the truth.
- MFF: a smooth random focus mask splits the image into two complementary regions; each image is
  sharp in its region and defocused (disk blur, radius 1.5-5 px, a different radius per image)
  elsewhere, with a soft transition at the boundary, then quantised to 8 bits.

Shapes: photographs (3, H, W) float in [0, 1]; pairs of the same shape.
"""

from __future__ import annotations

import csv
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from kornia.filters import filter2d, gaussian_blur2d

from .image_processor import FusionImageProcessor

BORDER_CROP = 8
"""Pixels cropped from every side of a BSDS photograph (scan borders, see the data README)."""


@dataclass
class SyntheticPair:
    stem: str
    image_a: torch.Tensor  # under-exposed (MEF) or focused where the mask is 1 (MFF)
    image_b: torch.Tensor  # over-exposed (MEF) or focused where the mask is 0 (MFF)
    ground_truth: torch.Tensor


def pair_generator(seed: int, stem: str) -> torch.Generator:
    """A generator seeded from (seed, stem), stable across runs and platforms."""
    return torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(stem.encode()))


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def _smooth_field(height: int, width: int, generator: torch.Generator, cells: int = 4) -> torch.Tensor:
    """A smooth random field (1, 1, H, W) with values roughly in [-1, 1]."""
    coarse = torch.rand(1, 1, cells, max(2, round(cells * width / height)), generator=generator) * 2 - 1
    return F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False).clamp(-1, 1)


def quantise(image: torch.Tensor) -> torch.Tensor:
    """Round to 8-bit levels, as a saved image would be."""
    return (image.clamp(0, 1) * 255).round() / 255


def _expose(linear: torch.Tensor, stops: torch.Tensor | float, generator: torch.Generator) -> torch.Tensor:
    """One 8-bit exposure of linear light (3, H, W): ``stops`` EV (a number or an (H, W) field), shot and read
    noise, clipped, gamma-encoded, an S-shaped tone curve (smoothstep), quantised."""
    exposed = linear * torch.pow(2.0, stops)
    shot = torch.randn(exposed.shape, generator=generator) * (exposed.clamp_min(0) * 1e-4).sqrt()
    read = torch.randn(exposed.shape, generator=generator) * 2e-3
    encoded = (exposed + shot + read).clamp(0, 1) ** (1 / 2.2)
    return quantise(encoded * encoded * (3 - 2 * encoded))


def synthesize_mef(photo: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(under, over) exposures of a (3, H, W) photograph in [0, 1]."""
    linear = photo.clamp(0, 1) ** 2.2
    height, width = photo.shape[-2:]
    exposures = []
    for sign in (-1.0, 1.0):
        stops = sign * _uniform(generator, 1.5, 3.0) + 0.5 * _smooth_field(height, width, generator)[0]
        exposures.append(_expose(linear, stops, generator))
    return exposures[0], exposures[1]


def synthesize_bracket(photo: torch.Tensor, generator: torch.Generator, frames: int,
                       span: float = 3.0) -> torch.Tensor:
    """An exposure bracket (N, 3, H, W) of a (3, H, W) photograph, darkest first.

    The frames are ``span`` EV below to ``span`` EV above the photograph in equal steps, all sharing one smooth
    random spatial gain (+-0.5 EV: one scene, one illumination), each with its own shot and read noise, then
    clipped, tone-mapped and quantised as :func:`synthesize_mef`'s pairs. Validation data for stacks of any
    length (the Waterloo sequences are for the final tables only).
    """
    linear = photo.clamp(0, 1) ** 2.2
    height, width = photo.shape[-2:]
    field = 0.5 * _smooth_field(height, width, generator)[0]
    bracket = []
    for stops in torch.linspace(-span, span, frames).tolist():
        bracket.append(_expose(linear, stops + field, generator))
    return torch.stack(bracket)


def disk_kernel(radius: float) -> torch.Tensor:
    """An anti-aliased, normalised disk (1, K, K): the defocus point-spread function."""
    half = int(radius + 1)
    coords = torch.arange(-half, half + 1, dtype=torch.float32)
    distance = (coords[:, None] ** 2 + coords[None, :] ** 2).sqrt()
    kernel = (radius + 0.5 - distance).clamp(0, 1)
    return (kernel / kernel.sum())[None]


def focus_mask(height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """A smooth binary-ish mask (1, H, W) in [0, 1] splitting the image into two focus regions."""
    field = _smooth_field(height, width, generator, cells=int(_uniform(generator, 2, 5)))
    mask = (field > field.median()).float()
    soft = gaussian_blur2d(mask, (15, 15), (3.0, 3.0), border_type="replicate")
    return soft[0]


def synthesize_mff(photo: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, b): a is sharp where a random focus mask is 1 and defocused elsewhere, b the complement."""
    height, width = photo.shape[-2:]
    mask = focus_mask(height, width, generator)
    images = []
    for region in (mask, 1 - mask):
        blurred = filter2d(photo[None], disk_kernel(_uniform(generator, 1.5, 5.0)), border_type="reflect")[0]
        images.append(quantise(region * photo + (1 - region) * blurred))
    return images[0], images[1]


SYNTHESIZERS = {"MEF": synthesize_mef, "MFF": synthesize_mff}


class SyntheticPairs(torch.utils.data.Dataset):
    """Synthetic pairs from the natural photographs of one split.

    Args:
        data_root: the ``shared/data`` folder (holding ``natural.csv``).
        task: ``"MEF"`` or ``"MFF"``.
        split: ``"train"`` or ``"test"``.
        seed: changes every pair; the same seed gives the same pairs.
        limit: use only the first ``limit`` photographs (sorted by stem).
    """

    def __init__(self, data_root: str | Path, task: str, split: str = "train", seed: int = 0,
                 limit: int | None = None) -> None:
        if task not in SYNTHESIZERS:
            raise ValueError(f"Synthetic pairs exist for MEF and MFF, not {task!r}.")
        self.data_root = Path(data_root)
        index = self.data_root / "natural.csv"
        if not index.is_file():
            raise FileNotFoundError(f"No natural.csv in {self.data_root}; pass the shared/data folder.")
        with index.open(newline="") as handle:
            rows = [row for row in csv.DictReader(handle) if row["split"] == split]
        if not rows:
            raise ValueError(f"natural.csv lists no photographs for split {split!r}.")
        rows.sort(key=lambda row: row["stem"])
        self.rows = rows[:limit] if limit else rows
        self.task, self.split, self.seed = task, split, seed
        self._processor = FusionImageProcessor()

    def __len__(self) -> int:
        return len(self.rows)

    def photo(self, index: int) -> torch.Tensor:
        """The ground-truth photograph (3, H - 16, W - 16), scan borders cropped."""
        image = self._processor.load(self.data_root / self.rows[index]["path"])
        if image.shape[0] == 1:
            image = image.expand(3, -1, -1)
        return image[:, BORDER_CROP:-BORDER_CROP, BORDER_CROP:-BORDER_CROP].contiguous()

    def __getitem__(self, index: int) -> SyntheticPair:
        stem = self.rows[index]["stem"]
        photo = self.photo(index)
        image_a, image_b = SYNTHESIZERS[self.task](photo, pair_generator(self.seed, stem))
        return SyntheticPair(stem, image_a, image_b, photo)
