"""fusionfm.evaluation.fidelity: values outside the sources near edges, light sources, saturation, by hand."""

from __future__ import annotations

import torch

from fusionfm.evaluation.fidelity import (
    light_source_shortfall,
    light_sources,
    mean_saturation,
    outside_share_near_edges,
)


def test_light_sources_are_compact_clipped_regions():
    image = torch.zeros(1, 1, 64, 64)
    image[..., 4:10, 4:10] = 255.0  # a lamp
    image[..., 24:64, :] = 255.0  # an over-exposed sky, wider than the opening
    mask = light_sources(image)
    assert mask[..., 4:10, 4:10].eq(1).all() and mask[..., 24:, :].eq(0).all() and mask.sum() == 36


def test_a_lamp_dimmed_by_twenty_levels_falls_twenty_short():
    visible = torch.full((1, 1, 48, 48), 40.0)
    visible[..., 20:26, 20:26] = 255.0
    fused = visible.clone()
    fused[..., 20:26, 20:26] = 235.0
    shortfall, count = light_source_shortfall(fused, visible)
    assert float(count) == 36 and float(shortfall) == 20.0
    assert float(light_source_shortfall(visible, visible)[0]) == 0.0


def test_values_outside_both_sources_are_counted_only_near_edges():
    a = torch.zeros(1, 1, 40, 40)
    a[..., :, 20:] = 200.0  # one vertical edge
    b = a.clone()
    fused = a.clone()
    fused[..., :, 18] = -30.0  # an undershoot beside the edge (outside both by 30)
    fused[..., 5, 5] = 100.0  # far from any edge: not counted
    share = outside_share_near_edges(fused, a, b)
    edges = 40 * 4  # the Sobel edge is two columns wide on each side of the step
    assert 0 < float(share) <= 40 / edges + 1e-6
    assert float(outside_share_near_edges(a, a, b)) == 0.0


def test_saturation_by_hand():
    rgb = torch.tensor([[0.8, 0.4, 0.4], [0.5, 0.5, 0.5]]).T.reshape(1, 3, 1, 2)  # a red and a gray pixel
    torch.testing.assert_close(mean_saturation(rgb), torch.tensor([0.25]))
    assert float(mean_saturation(torch.rand(1, 1, 4, 4))) == 0.0
