"""fusionfm.evaluation.artifacts: checkerboards and border bands are caught, real content is not."""

from __future__ import annotations

import torch

from fusionfm.evaluation.artifacts import border_band, nyquist_energy, nyquist_ratio
from fusionfm.evaluation.baseline import average_255
from fusionfm.metrics.fusion import to_gray_255


def _sources(real_pair):
    ir, vi = real_pair("IVF")
    return to_gray_255(ir), to_gray_255(vi)


def test_a_checkerboard_is_caught_and_the_average_is_clean(real_pair):
    a, b = _sources(real_pair)
    average = average_255(a, b)
    assert nyquist_ratio(average, a, b) < 1.0
    checker = torch.ones_like(average)
    checker[..., ::2, ::2] = checker[..., 1::2, 1::2] = -1
    assert nyquist_ratio(average + 4 * checker, a, b) > 5
    stripes = torch.zeros(1, 1, 4, 6)
    stripes[..., ::2] = 1.0  # 1, 0, 1, 0, ... along every row; every column is constant
    assert abs(nyquist_energy(stripes) - (3**2 / 6 + 0) / 2) < 1e-12  # alternating row sums 3, column sums 0


def test_a_band_at_the_border_is_caught_and_a_blend_is_clean(real_pair):
    a, b = _sources(real_pair)
    average = average_255(a, b)
    assert border_band(average, a, b) < 1e-9
    assert border_band(torch.maximum(a, b), a, b) < 2.0
    banded = average.clone()
    banded[..., :16, :] += 20  # a bright band along the top
    # The average's top step lies between the sources' (13 grey levels apart here): 20 more leaves their range
    # by 20 minus the distance from the average's step to the upper source step.
    assert 10 < border_band(banded, a, b) <= 20
