"""The Fusion Refiner: leaves complete labels alone, restores removed source detail, keeps colour."""

from __future__ import annotations

import pytest
import torch
from conftest import DATA
from kornia.color import rgb_to_ycbcr
from kornia.filters import gaussian_blur2d

from fusionfm import FusionImageProcessor
from fusionfm.color import luminance
from fusionfm.labels.refiner import (
    RefinerConfig,
    load_decomposer,
    refine_image,
    refine_luminance,
    save_decomposer,
    train_decomposer,
)
from fusionfm.metrics.fusion import qabf, to_gray_255
from fusionfm.synthetic import SyntheticPairs

pytestmark = pytest.mark.slow  # trains the decomposition network on a real pair

CONFIG = RefinerConfig(train_steps=60)


def _detail(image: torch.Tensor) -> torch.Tensor:
    return image - gaussian_blur2d(image, (9, 9), (1.5, 1.5), border_type="replicate")


def _correlation(x: torch.Tensor, y: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([x.flatten(), y.flatten()]))[0, 1])


@pytest.fixture(scope="module")
def ivf_pair():
    processor = FusionImageProcessor()
    paths = [DATA / f"IVF/RoadScene/test/{modality}/FLIR_06995.jpg" for modality in ("ir", "vi")]
    a, b = (processor.load(path)[None] for path in paths)
    return a, b


@pytest.fixture(scope="module")
def ivf_decomposer(ivf_pair):
    a, b = ivf_pair
    return train_decomposer([(luminance(a), luminance(b))], CONFIG)


def test_the_decomposition_adds_up_and_follows_the_mix(ivf_pair, ivf_decomposer):
    a, b = (luminance(x) for x in ivf_pair)
    weight = torch.zeros_like(a)
    weight[..., : a.shape[-1] // 2] = 1.0  # left half from a, right half from b
    mix = weight * a + (1 - weight) * b
    with torch.no_grad():
        component_a = ivf_decomposer(mix, a, b)
    component_b = mix - component_a
    torch.testing.assert_close(component_a + component_b, mix)
    left, right = (..., slice(None), slice(0, 200)), (..., slice(None), slice(300, None))
    assert (component_a[left] - a[left]).abs().mean() < (component_b[left] - b[left]).abs().mean()
    assert (component_b[right] - b[right]).abs().mean() < (component_a[right] - a[right]).abs().mean()


def test_a_label_holding_all_detail_is_left_alone():
    pairs = SyntheticPairs(DATA, "MFF", "test", limit=2)
    net = train_decomposer([(luminance(p.image_a[None]), luminance(p.image_b[None]))
                            for p in (pairs[0], pairs[1])], CONFIG)
    for pair in (pairs[0], pairs[1]):
        truth = luminance(pair.ground_truth[None])
        refined = refine_luminance(truth, luminance(pair.image_a[None]), luminance(pair.image_b[None]), net, CONFIG)
        changed = (refined - truth).abs() > 1 / 255
        assert changed.float().mean() < 0.01


def test_detail_removed_from_one_source_comes_back(ivf_pair, ivf_decomposer):
    a, b = (luminance(x) for x in ivf_pair)
    label = 0.5 * gaussian_blur2d(a, (9, 9), (3.0, 3.0), border_type="replicate") + 0.5 * b  # a's detail gone
    refined = refine_luminance(label, a, b, ivf_decomposer, CONFIG)
    before, after = _correlation(_detail(label), _detail(a)), _correlation(_detail(refined), _detail(a))
    assert after > before + 0.1
    assert qabf(to_gray_255(refined), to_gray_255(a), to_gray_255(b)) > qabf(to_gray_255(label), to_gray_255(a),
                                                                             to_gray_255(b))
    assert refined.min() >= 0 and refined.max() <= 1


def test_decomposer_round_trip(tmp_path, ivf_pair, ivf_decomposer):
    a, b = (luminance(x) for x in ivf_pair)
    save_decomposer(ivf_decomposer, tmp_path / "net.safetensors", CONFIG)
    loaded = load_decomposer(tmp_path / "net.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(loaded(a, a, b), ivf_decomposer(a, a, b))


def test_refine_image_keeps_the_label_chroma(ivf_pair, ivf_decomposer):
    a, b = ivf_pair  # infrared gray, visible colour
    label = 0.5 * gaussian_blur2d(a.expand_as(b), (9, 9), (3.0, 3.0)) + 0.5 * b
    refined = refine_image(label, a, b, ivf_decomposer, CONFIG)
    assert refined.shape == label.shape
    assert not torch.equal(luminance(refined), luminance(label))
    chroma_before, chroma_after = (rgb_to_ycbcr(x)[:, 1:] for x in (label, refined))
    assert (chroma_after - chroma_before).abs().mean() < 2 / 255
