"""Synthetic MEF/MFF pairs from real photographs: deterministic, and exposed / focused as intended."""

from __future__ import annotations

import pytest
import torch
from conftest import DATA
from kornia.filters import laplacian

from fusionfm.synthetic import (
    SyntheticPairs,
    focus_mask,
    pair_generator,
    synthesize_bracket,
    synthesize_mff,
)


@pytest.mark.parametrize("task", ["MEF", "MFF"])
def test_pairs_are_deterministic_and_seed_dependent(task):
    first = SyntheticPairs(DATA, task, "test", seed=0, limit=2)[1]
    again = SyntheticPairs(DATA, task, "test", seed=0, limit=2)[1]
    other = SyntheticPairs(DATA, task, "test", seed=1, limit=2)[1]
    assert first.stem == again.stem
    assert torch.equal(first.image_a, again.image_a) and torch.equal(first.image_b, again.image_b)
    assert not torch.equal(first.image_a, other.image_a)
    assert first.image_a.shape == first.ground_truth.shape == (3, 305, 465)
    assert torch.equal(first.image_a, (first.image_a * 255).round() / 255)  # 8-bit levels


def test_mef_exposures_bracket_the_ground_truth():
    for pair in SyntheticPairs(DATA, "MEF", "test", limit=5):
        assert pair.image_a.mean() < pair.ground_truth.mean() < pair.image_b.mean()
        assert (pair.image_b >= 1).float().mean() > (pair.ground_truth >= 1).float().mean()  # clipping


def test_brackets_run_darkest_first_around_the_photograph():
    dataset = SyntheticPairs(DATA, "MEF", "test", limit=2)
    photo = dataset.photo(1)
    bracket = synthesize_bracket(photo, pair_generator(0, "bracket"), frames=5)
    assert bracket.shape == (5, *photo.shape)
    assert torch.equal(bracket, synthesize_bracket(photo, pair_generator(0, "bracket"), frames=5))
    means = bracket.mean(dim=(1, 2, 3))
    assert torch.all(means[1:] > means[:-1])
    assert means[0] < photo.mean() < means[-1]
    assert (bracket[-1] >= 1).float().mean() > 0.05 and (bracket[0] <= 10 / 255).float().mean() > 0.05


def test_mff_images_are_sharp_in_complementary_regions():
    dataset = SyntheticPairs(DATA, "MFF", "test", limit=3)
    for index in range(3):
        photo = dataset.photo(index)
        generator = pair_generator(0, dataset.rows[index]["stem"])
        mask = focus_mask(*photo.shape[-2:], pair_generator(0, dataset.rows[index]["stem"]))
        image_a, image_b = synthesize_mff(photo, generator)
        region_a, region_b = mask[0] > 0.99, mask[0] < 0.01
        assert region_a.float().mean() > 0.2 and region_b.float().mean() > 0.2
        detail_a = laplacian(image_a[None], 3)[0].abs().mean(dim=0)
        detail_b = laplacian(image_b[None], 3)[0].abs().mean(dim=0)
        assert detail_a[region_a].mean() > 1.5 * detail_b[region_a].mean()
        assert detail_b[region_b].mean() > 1.5 * detail_a[region_b].mean()
        # Where a is in focus it equals the photograph up to 8-bit rounding.
        assert (image_a - photo).abs().amax(dim=0)[region_a].max() < 1 / 255


def test_bad_arguments():
    with pytest.raises(ValueError, match="Synthetic pairs exist for MEF and MFF, not 'IVF'"):
        SyntheticPairs(DATA, "IVF")
    with pytest.raises(FileNotFoundError, match="No natural.csv"):
        SyntheticPairs(DATA / "IVF", "MEF")
    with pytest.raises(ValueError, match="no photographs for split 'val'"):
        SyntheticPairs(DATA, "MEF", "val")
