"""fusionfm.metrics.mef_ssim: the golden values, an independent computation, and a sanity ranking."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from conftest import DATA, SHARED
from scipy.signal import correlate2d

from fusionfm import FusionImageProcessor, load_image
from fusionfm.metrics.mef_ssim import mef_ssim

WATERLOO = DATA / "MEF" / "Waterloo"
ROWS = list(csv.DictReader((SHARED / "golden" / "mef_ssim_reference.csv").open(newline="")))


def _rgb(path) -> torch.Tensor:
    image = FusionImageProcessor().to_tensor_list(load_image(path))[0]
    return image.expand(3, -1, -1) if image.shape[0] == 1 else image


def _sequence(name: str) -> torch.Tensor:
    return torch.stack([_rgb(path) for path in sorted((WATERLOO / "sequences" / name).glob("*.png"))])


@pytest.fixture(scope="module")
def sequences():
    return {name: _sequence(name) for name in ("Candle", "LightHouse")}


@pytest.mark.parametrize("row", ROWS, ids=[f"{r['sequence']}-{r['algorithm']}" for r in ROWS])
def test_golden_values(row, sequences):
    fused = _rgb(WATERLOO / "fused" / row["sequence"] / f"{row['algorithm']}.png")
    assert mef_ssim(fused, sequences[row["sequence"]]) == pytest.approx(float(row["MEF_SSIM"]), abs=3e-5)


def _by_hand(fused: np.ndarray, frames: list[np.ndarray]) -> float:
    """The formula written out with scipy's 2-D correlation (zero padding), one pixel map at a time."""
    x = np.arange(11) - 5
    g = np.exp(-x**2 / (2 * (11 / 6) ** 2))
    window = np.outer(g, g) / np.outer(g, g).sum()

    def mean(image):
        return correlate2d(image, window, mode="same", boundary="fill")

    mu_f, var_f = mean(fused), mean(fused**2) - mean(fused) ** 2
    mus = [mean(frame) for frame in frames]
    variances = [mean(frame**2) - mu**2 for frame, mu in zip(frames, mus, strict=True)]
    covariances = [mean(frame * fused) - mu * mu_f for frame, mu in zip(frames, mus, strict=True)]
    best = np.argmax(np.stack(variances), axis=0)
    var_r = np.choose(best, variances)
    cov_r = np.choose(best, covariances)
    cs = (2 * cov_r + 0.03**2) / (var_f + var_r + 0.03**2)
    weights = [np.exp(-(mu.mean() - 0.5) ** 2 / 0.08) * np.exp(-(mu - 0.5) ** 2 / 0.08) for mu in mus]
    mu_t = sum(w * mu for w, mu in zip(weights, mus, strict=True)) / sum(weights)
    luminance = (2 * mu_f * mu_t + 0.01**2) / (mu_f**2 + mu_t**2 + 0.01**2)
    return float(luminance.mean() * cs.mean())


def test_matches_a_computation_by_hand_on_a_tiny_sequence():
    generator = torch.Generator().manual_seed(0)
    frames = torch.rand(3, 1, 20, 24, generator=generator) * torch.tensor([0.4, 0.8, 1.0]).view(3, 1, 1, 1)
    fused = torch.rand(1, 20, 24, generator=generator)
    expected = _by_hand(fused[0].double().numpy(), [frame[0].double().numpy() for frame in frames])
    assert mef_ssim(fused, frames) == pytest.approx(expected, rel=1e-5)  # float32 against float64


def test_a_well_exposed_fusion_beats_the_plain_mean(sequences):
    frames = sequences["LightHouse"]
    mertens = _rgb(WATERLOO / "fused" / "LightHouse" / "Mertens07.png")
    assert mef_ssim(mertens, frames) > mef_ssim(frames.mean(dim=0), frames) + 0.02


def test_bad_shapes():
    with pytest.raises(ValueError, match="K >= 2"):
        mef_ssim(torch.rand(3, 8, 8), torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="the frames"):
        mef_ssim(torch.rand(3, 8, 8), torch.rand(2, 3, 8, 9))
