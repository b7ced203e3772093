"""Colour rules: luminance, gray detection, chroma per policy (DESIGN.md, "Colour")."""

from __future__ import annotations

import numpy as np
import torch

from fusionfm.color import chroma, is_gray, luminance, recombine, saturation_weighted_chroma
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
