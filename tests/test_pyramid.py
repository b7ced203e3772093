"""fusionfm.pyramid: exact reconstruction and band-wise blending; the U-Net's pyramid head built on it."""

from __future__ import annotations

import pytest
import torch

from fusionfm import (
    FusionImageProcessor,
)
from fusionfm.color import luminance
from fusionfm.metrics.fusion import fusion_metrics, to_gray_255
from fusionfm.priors import laplacian_pyramid_fusion
from fusionfm.pyramid import (
    activity_fusion,
    activity_logit,
    blend_pyramids,
    collapse,
    consistent_detail_logit,
    laplacian_pyramid,
    pyramid_levels,
    salience_logit,
)


def test_collapse_inverts_the_laplacian_pyramid_at_odd_sizes(ivf_crops):
    a = ivf_crops[0][..., :77, :101]
    torch.testing.assert_close(collapse(laplacian_pyramid(a, 4)), a, atol=1e-5, rtol=0)
    assert pyramid_levels(77, 101) == 4 and pyramid_levels(4, 4) == 1


def test_saturated_weights_and_unit_gains_reproduce_each_source(ivf_crops):
    a, b = ivf_crops
    saturated, unit_gains = torch.full((1, 4, *a.shape[-2:]), 50.0), torch.ones(1, 3, *a.shape[-2:])
    torch.testing.assert_close(blend_pyramids(a, b, saturated, unit_gains), a, atol=1e-5, rtol=0)
    torch.testing.assert_close(blend_pyramids(a, b, -saturated, unit_gains), b, atol=1e-5, rtol=0)


def test_band_wise_weights_take_each_band_from_its_source(ivf_crops):
    a, b = ivf_crops
    weights = torch.full((1, 3, *a.shape[-2:]), -50.0)
    weights[:, 0] = 50.0  # the finest band from a, the rest from b
    fused = blend_pyramids(a, b, weights, torch.ones(1, 2, *a.shape[-2:]))
    bands_a, bands_b = laplacian_pyramid(a, 3), laplacian_pyramid(b, 3)
    torch.testing.assert_close(fused, collapse([bands_a[0], bands_b[1], bands_b[2]]), atol=1e-6, rtol=0)
    doubled = blend_pyramids(a, b, weights, torch.full((1, 2, *a.shape[-2:]), 2.0))
    torch.testing.assert_close(doubled, collapse([2 * bands_a[0], 2 * bands_b[1], bands_b[2]]), atol=1e-6, rtol=0)
    assert (doubled - fused).abs().mean() > 0.005  # the gains really raise the detail
    with pytest.raises(ValueError, match="3 weight maps need 2 gain maps"):
        blend_pyramids(a, b, weights, torch.ones(1, 3, *a.shape[-2:]))


def test_activity_logit_by_hand():
    a, b = torch.tensor([[0.2, -0.1]]), torch.tensor([[0.1, 0.3]])
    expected = torch.tensor([[(0.2 - 0.1) / (0.3 + 1e-3), (0.1 - 0.3) / (0.4 + 1e-3)]])
    torch.testing.assert_close(activity_logit(a, b, base=False), expected)
    base_a, base_b = torch.tensor([[0.6, 0.0]]), torch.tensor([[0.2, 0.0]])
    torch.testing.assert_close(activity_logit(base_a, base_b, base=True), torch.tensor([[0.4 / (0.8 + 1e-3), 0.0]]))


def test_salience_logit_by_hand():
    """On a flat 5x5 band the Gaussian smoothing leaves each constant magnitude as it is."""
    base_a, base_b = torch.full((1, 1, 5, 5), 0.9), torch.full((1, 1, 5, 5), 0.3)
    means = torch.tensor([[0.5, 0.2]])  # a departs 0.4 from its mean, b 0.1
    expected = torch.full((1, 1, 5, 5), (0.4 - 0.1) / (0.5 + 1e-3))
    torch.testing.assert_close(salience_logit(base_a, base_b, means), expected)
    # Without means each band's own: a flat band departs from nothing, so neither source is salient.
    torch.testing.assert_close(salience_logit(base_a, base_b), torch.zeros(1, 1, 5, 5))


def test_a_salient_base_keeps_what_stands_out_in_either_source():
    """An infrared image with a warm target on a mid-grey background, a visible one with a headlight and a black
    car on a grey road. An averaged base (the previous IVF prior) greys the headlight; a brighter-source base
    turns the black car into the infrared's grey; the salient base keeps the target, the headlight and the car."""
    a = torch.full((1, 1, 128, 128), 0.45)
    a[..., 20:52, 20:52] = 0.95  # the warm target
    b = torch.full((1, 1, 128, 128), 0.5)
    b[..., 76:108, 76:108] = 1.0  # the headlight
    b[..., 76:108, 12:44] = 0.0  # the black car
    detail = [16.0] * 2  # 3 levels: the base (32x32) holds most of each 32-pixel object
    averaged = activity_fusion(a, b, torch.tensor([*detail, 0.0]))
    brighter = activity_fusion(a, b, torch.tensor([*detail, 4.0]))
    salient = activity_fusion(a, b, torch.tensor([*detail, 4.0]), salient_base=True)

    def mean_in(image: torch.Tensor, top: int, left: int) -> float:
        return image[..., top + 8 : top + 24, left + 8 : left + 24].mean().item()

    assert mean_in(salient, 20, 20) > 0.9 and mean_in(averaged, 20, 20) < 0.8  # target
    assert mean_in(salient, 76, 76) > 0.95 and mean_in(averaged, 76, 76) < 0.8  # headlight
    assert mean_in(salient, 76, 12) < 0.05 and mean_in(brighter, 76, 12) > 0.3  # black car


def test_consistent_detail_logit_by_hand():
    """On bands of constant magnitude the smoothing leaves each magnitude as it is; signs do not matter."""
    finest_a = torch.tensor([[[[0.3, -0.3, 0.3], [-0.3, 0.3, -0.3]]]])
    finest_b = torch.full((1, 1, 2, 3), 0.1)
    expected = torch.full((1, 1, 2, 3), (0.3 - 0.1) / (0.4 + 1e-3))
    torch.testing.assert_close(consistent_detail_logit(finest_a, finest_b), expected)
    torch.testing.assert_close(consistent_detail_logit(finest_a, finest_b, epsilon=0.03),
                               torch.full((1, 1, 2, 3), (0.3 - 0.1) / (0.4 + 0.03)))


def test_a_larger_consistency_epsilon_evens_the_choice_only_where_both_bands_are_weak():
    """Weak bands (0.003 against 0.001, noise on flat ground): 0.4 with the old epsilon 0.001, 0.059 with 0.03;
    a strong edge (0.3 against 0.1) stays at 0.47 either way."""
    weak_a, weak_b = torch.full((1, 1, 4, 4), 0.003), torch.full((1, 1, 4, 4), 0.001)
    assert consistent_detail_logit(weak_a, weak_b).mean().item() == pytest.approx(0.002 / 0.005, abs=1e-4)
    assert consistent_detail_logit(weak_a, weak_b, epsilon=0.03).mean().item() == pytest.approx(0.002 / 0.034,
                                                                                                abs=1e-4)
    strong_a, strong_b = weak_a * 100, weak_b * 100
    assert consistent_detail_logit(strong_a, strong_b, epsilon=0.03).mean().item() == pytest.approx(0.2 / 0.43,
                                                                                                    abs=1e-4)


def test_a_consistent_detail_choice_keeps_more_of_the_sources_edges_on_a_real_mri_ct_pair(real_pair):
    """Qabf (edge strength and orientation kept from the ivf_crops) of the prior alone, MRI-CT example: with half of
    every detail level's choice from one consistent map it rises (0.613 -> 0.650 measured); weight 0 is the
    per-band choice exactly."""
    processor = FusionImageProcessor()
    mri, ct = (luminance(processor.to_tensor_list(image)[0][None]) for image in real_pair("MIF-CT"))
    scales, gains = torch.full((5,), 16.0), torch.full((4,), 1.02)
    per_band = activity_fusion(mri, ct, scales, gains)
    torch.testing.assert_close(activity_fusion(mri, ct, scales, gains, detail_consistency=0.0), per_band)
    consistent = activity_fusion(mri, ct, scales, gains, detail_consistency=0.5)
    gray = to_gray_255(mri), to_gray_255(ct)
    qabf = [float(fusion_metrics(to_gray_255(image), *gray)["Qabf"]) for image in (per_band, consistent)]
    assert qabf[1] > qabf[0] + 0.02


def test_consistent_detail_logit_takes_one_epsilon_per_item():
    finest_a, finest_b = torch.full((2, 1, 4, 4), 0.003), torch.full((2, 1, 4, 4), 0.001)
    both = consistent_detail_logit(finest_a, finest_b, epsilon=torch.tensor([0.001, 0.03]))
    torch.testing.assert_close(both[:1], consistent_detail_logit(finest_a[:1], finest_b[:1], epsilon=0.001))
    torch.testing.assert_close(both[1:], consistent_detail_logit(finest_a[1:], finest_b[1:], epsilon=0.03))


def test_a_strong_activity_prior_is_the_max_abs_laplacian_prior(ivf_crops):
    """Logits 0 and detail strengths far above 1: each detail coefficient from the source with the larger
    magnitude, the base averaged (strength 0), which is the Laplacian-pyramid prior."""
    a, b = ivf_crops
    levels = pyramid_levels(*a.shape[-2:])
    fused = activity_fusion(a, b, torch.tensor([1e4] * (levels - 1) + [0.0]))
    prior = laplacian_pyramid_fusion(a, b)
    assert (fused - prior).abs().mean() < 1e-4
    average = blend_pyramids(a, b, torch.zeros(1, levels, 1, 1), torch.ones(1, levels - 1, 1, 1))
    assert (average - prior).abs().mean() > 0.01  # without the prior, logits 0 are the plain average

