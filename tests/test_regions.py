"""fusionfm.labels.regions: region-level selection picks each region's best candidate and merges without seams."""

from __future__ import annotations

import torch
from conftest import DATA
from kornia.filters import gaussian_blur2d

from fusionfm.evaluation.reference import psnr_to_truth
from fusionfm.labels.regions import local_weights, region_select
from fusionfm.priors import priors_for, run_prior
from fusionfm.synthetic import SyntheticPairs


def _half_focused_pair():
    """A real photograph, sharp on the left in a and on the right in b (blurred elsewhere), and its truth."""
    truth = SyntheticPairs(DATA, "MFF", "test").photo(0)[None][..., :160, :224]
    blurred = gaussian_blur2d(truth, (15, 15), (3.0, 3.0), border_type="reflect")
    left = torch.zeros_like(truth[:, :1])
    left[..., : truth.shape[-1] // 2] = 1
    return left * truth + (1 - left) * blurred, (1 - left) * truth + left * blurred, truth, left


def test_each_half_takes_its_best_candidate():
    a, b, truth, left = _half_focused_pair()
    # Two candidates, each right on one half only: the sources themselves.
    selection = region_select({"a": a, "b": b}, a, b, "MFF", window=15)
    choice = selection.choice[0, 0]
    width = choice.shape[-1]
    assert (choice[:, : width // 2 - 16] == 0).float().mean() > 0.95  # a on the left
    assert (choice[:, width // 2 + 16 :] == 1).float().mean() > 0.95  # b on the right
    assert psnr_to_truth(selection.label, truth) > max(psnr_to_truth(a, truth), psnr_to_truth(b, truth)) + 5


def test_no_seam_where_the_choice_changes():
    a, b, truth, _ = _half_focused_pair()
    label = region_select({"a": a, "b": b}, a, b, "MFF", window=15).label
    # The merged label's step across the boundary columns is no larger than the truth's there.
    middle = truth.shape[-1] // 2
    label_steps = (label[..., middle - 8 : middle + 8].diff(dim=-1)).abs().mean()
    truth_steps = (truth[..., middle - 8 : middle + 8].diff(dim=-1)).abs().mean()
    assert label_steps < 1.5 * truth_steps


def test_merging_the_priors_is_at_least_as_close_as_the_best_of_them():
    a, b, truth, _ = _half_focused_pair()
    candidates = {prior.name: run_prior(prior.name, a, b, "MFF") for prior in priors_for("MFF")}
    merged = region_select(candidates, a, b, "MFF").label
    best_single = max(psnr_to_truth(image, truth) for image in candidates.values())
    assert psnr_to_truth(merged, truth) > best_single + 0.5  # measured: 48.96 dB vs 47.91 (focus map)


def test_local_weights_keep_the_local_metrics_of_the_task_row():
    assert local_weights("MEF") == {"Qabf": 1.0}
    weights = local_weights("IVF")
    assert set(weights) == {"Qabf", "SSIM", "SD", "SF"} and abs(sum(weights.values()) - 1) < 1e-12
