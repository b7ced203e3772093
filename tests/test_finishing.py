"""The fused luminance's last step against its sources (fusionfm.finishing)."""

from __future__ import annotations

import torch

from fusionfm.finishing import favour_the_lit_source, keep_shared_extremes


def test_shared_black_and_white_are_kept_by_hand():
    """Pixels: both black, one black, both white, one white, mid-grey; a fused glow of 0.03 or a dip of 0.97."""
    source_a = torch.tensor([0.0, 0.0, 1.0, 1.0, 0.5]).view(1, 1, 1, 5)
    source_b = torch.tensor([0.001, 0.4, 1.0, 0.6, 0.5]).view(1, 1, 1, 5)  # 0.001 still rounds to black
    fused = torch.tensor([0.03, 0.03, 0.97, 0.97, 0.03]).view(1, 1, 1, 5)
    kept = keep_shared_extremes(fused, [source_a, source_b]).flatten()
    torch.testing.assert_close(kept, torch.tensor([0.001, 0.03, 1.0, 0.97, 0.03]))
    # Any number of sources: black only where every one is.
    third = torch.tensor([0.2, 0.0, 1.0, 1.0, 0.5]).view(1, 1, 1, 5)
    torch.testing.assert_close(keep_shared_extremes(fused, [source_a, source_b, third]).flatten(),
                               torch.tensor([0.03, 0.03, 1.0, 0.97, 0.03]))


def test_the_lit_source_is_taken_where_the_other_is_black_all_around_by_hand():
    """A 1x7 strip, box half-width 1 (3x3, cut at the border): b black on its left four pixels, a never black."""
    y_a = torch.full((1, 1, 1, 7), 0.6)
    y_b = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.8, 0.8, 0.8]).view(1, 1, 1, 7)
    fused = torch.full((1, 1, 1, 7), 0.3)
    result = favour_the_lit_source(fused, y_a, y_b, radius=1, power=2).flatten()
    share_b = torch.tensor([1, 1, 1, 2 / 3, 1 / 3, 0, 0]) ** 2  # b's black share in each pixel's box, squared
    torch.testing.assert_close(result, share_b * 0.6 + (1 - share_b) * 0.3)
    # Symmetric in the sources; where both are black all around, the fusion is left as it is.
    torch.testing.assert_close(favour_the_lit_source(fused, y_b, y_a, radius=1, power=2).flatten(), result)
    black = torch.zeros(1, 1, 1, 7)
    torch.testing.assert_close(favour_the_lit_source(fused, black, black, radius=1, power=2), fused)


def test_the_lit_source_on_a_real_pair_matches_a_pooled_reference(real_pair):
    """On a real MRI-PET pair (the PET black around the brain), against box shares from ``avg_pool2d``."""
    import numpy as np
    import torch.nn.functional as F

    mri, pet = (torch.from_numpy(np.asarray(image.convert("L"), np.float32) / 255)[None, None]
                for image in real_pair("MIF-PET"))
    fused = (mri + pet) / 2
    shares = F.avg_pool2d(torch.cat([mri, pet], 1).le(0.5 / 255).float(), 9, 1, 4, count_include_pad=False) ** 3
    both = shares.amin(dim=1, keepdim=True)
    weight_mri, weight_pet = shares[:, 1:] - both, shares[:, :1] - both
    expected = weight_mri * mri + weight_pet * pet + (1 - weight_mri - weight_pet) * fused
    result = favour_the_lit_source(fused, mri, pet, radius=4, power=3)
    torch.testing.assert_close(result, expected, atol=1e-6, rtol=0)
    assert (weight_mri == 1).float().mean() > 0.05 and (result - fused).abs().max() > 0.1  # the rule does act here
