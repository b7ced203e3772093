"""Colour rules: luminance, gray detection, chroma per policy (DESIGN.md, "Colour")."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fusionfm.color import (
    CHROMA_SCALE_POWER,
    chroma,
    exposure_matched_chroma,
    is_gray,
    luminance,
    luminance_with_chroma,
    recombine,
    saturation_weighted_chroma,
)
from fusionfm.tasks import ColorPolicy


def _rgb(image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, np.float32) / 255).permute(2, 0, 1)[None]


def test_luminance_is_bt601(real_pair):
    _, vi = real_pair("IVF")
    rgb = _rgb(vi)
    expected = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
    torch.testing.assert_close(luminance(rgb)[:, 0], expected, atol=1e-5, rtol=0)


def test_recombining_the_own_luminance_gives_the_image_back(real_pair):
    _, vi = real_pair("IVF")
    rgb = _rgb(vi)
    back = recombine(luminance(rgb), rgb[:, :1], rgb, ColorPolicy.CHROMA_FROM_B)
    torch.testing.assert_close(back, rgb, atol=2e-3, rtol=0)


def test_gray_detection(real_pair):
    _, ct = real_pair("MIF-CT")
    _, pet = real_pair("MIF-PET")
    assert is_gray(_rgb(ct)) and not is_gray(_rgb(pet))


def test_saturation_weighted_chroma_by_hand():
    chroma_a = torch.tensor([0.5, 0.7, 0.2, 0.5]).view(1, 1, 2, 2).expand(1, 2, 2, 2)
    chroma_b = torch.tensor([0.5, 0.4, 0.6, 0.9]).view(1, 1, 2, 2).expand(1, 2, 2, 2)
    blended = saturation_weighted_chroma(chroma_a, chroma_b)[0, 0].flatten()
    expected = torch.tensor([0.5, (0.7 * 0.2 + 0.4 * 0.1) / 0.3, (0.2 * 0.3 + 0.6 * 0.1) / 0.4, 0.9])
    torch.testing.assert_close(blended, expected)


def test_saturation_policy_with_one_gray_input_takes_the_colour_one(real_pair):
    under, over = real_pair("MEF")
    colour, gray = _rgb(under), _rgb(over.convert("L").convert("RGB"))[:, :1]
    y = luminance(colour)
    fused = recombine(y, gray, colour, ColorPolicy.SATURATION_WEIGHTED)
    torch.testing.assert_close(chroma(fused), chroma(colour), atol=2e-3, rtol=0)
    assert recombine(y, gray, gray, ColorPolicy.SATURATION_WEIGHTED).shape[1] == 1


def test_a_colour_that_does_not_fit_is_desaturated_at_its_luminance_by_hand():
    # Y 0.8 with a strong red (Cr 0.9): R = 0.8 + 1.4025 * 0.4 > 1. Clipping R would darken the pixel; instead the
    # chroma is scaled by t so that R = 1 exactly: t = 0.2 / (1.4025245442 * 0.4).
    y, cbcr = torch.tensor([0.8]).view(1, 1, 1, 1), torch.tensor([0.5, 0.9]).view(1, 2, 1, 1)
    rgb = luminance_with_chroma(y, cbcr)[0, :, 0, 0]
    t = 0.2 / (1.4025245442 * 0.4)
    expected = torch.tensor([1.0, 0.8 - t * 0.7144034731 * 0.4, 0.8])
    torch.testing.assert_close(rgb, expected)
    torch.testing.assert_close(luminance(rgb.view(1, 3, 1, 1)), y)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_gray_black_and_white_stay_so_in_every_precision(dtype):
    y = torch.tensor([0.0, 0.5, 1.0], dtype=dtype).view(1, 1, 1, 3)
    rgb = luminance_with_chroma(y, torch.full((1, 2, 1, 3), 0.5, dtype=dtype))
    torch.testing.assert_close(rgb, y.expand(1, 3, 1, 3))


def test_a_fused_luminance_survives_the_colour_of_a_pet_scan(real_pair):
    # The MRI as the fused luminance under the PET's colour: 6.9 % of this pair's pixels (dark MRI under saturated
    # PET colour, mostly) do not fit in RGB, where clipping would brighten or darken them. The result still has
    # exactly the MRI's luminance and the PET's hue (the ratio Cb : Cr).
    mri, pet = real_pair("MIF-PET")
    mri, pet = _rgb(mri.convert("RGB"))[:, :1], _rgb(pet)
    unclipped = torch.cat([rgb - luminance(pet) + mri for rgb in pet.split(1, dim=1)], dim=1)
    assert ((unclipped < 0) | (unclipped > 1)).any(dim=1).float().mean() > 0.05
    fused = recombine(mri, mri, pet, ColorPolicy.CHROMA_FROM_B)
    torch.testing.assert_close(luminance(fused), mri, atol=1e-5, rtol=0)
    wanted, got = chroma(pet) - 0.5, chroma(fused) - 0.5
    cross = wanted[:, 0] * got[:, 1] - wanted[:, 1] * got[:, 0]
    assert cross.abs().max() < 1e-4


def test_exposure_matched_chroma_by_hand():
    """A surface seen dark (Y = 0.1, Cr offset 0.04) and clipped white (no colour), fused at Y = 0.4: its colour
    follows the brightness by the square root of the ratio, 0.04 x 2; frames at the fused brightness keep their
    colour exactly (a focus stack)."""
    fused_y = torch.full((1, 1, 2, 2), 0.4)
    red_offset = torch.tensor([0.5, 0.54]).view(1, 2, 1, 1).expand(1, 2, 2, 2)
    dark = luminance_with_chroma(torch.full((1, 1, 2, 2), 0.1), red_offset)
    white = torch.ones(1, 3, 2, 2)
    matched = exposure_matched_chroma(fused_y, [dark, white])
    expected_offset = 0.04 * ((0.4 + 1e-3) / (0.1 + 1e-3)) ** CHROMA_SCALE_POWER
    torch.testing.assert_close(matched[:, 1] - 0.5, torch.full((1, 2, 2), expected_offset), atol=2e-4, rtol=0)
    torch.testing.assert_close(matched[:, 0], torch.full((1, 2, 2), 0.5), atol=2e-4, rtol=0)
    frames = [torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(seed)) for seed in (0, 1)]
    same = luminance(frames[0])
    frames[1] = luminance_with_chroma(same, chroma(frames[1]))  # both frames at one brightness
    torch.testing.assert_close(exposure_matched_chroma(same, frames),
                               saturation_weighted_chroma(chroma(frames[0]), chroma(frames[1])), atol=1e-6, rtol=0)
