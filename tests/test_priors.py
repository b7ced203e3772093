"""Prior fusion methods: shapes, ranges and colour on real pairs; exactness where it is defined; external folders."""

from __future__ import annotations

import pytest
import torch
from conftest import DATA

from fusionfm import FusionImageProcessor
from fusionfm.priors import PRIORS, ExternalPriors, collapse, laplacian_pyramid, priors_for, run_prior

PROCESSOR = FusionImageProcessor()


def _tensors(pair):
    return [PROCESSOR.to_tensor_list(image)[0][None] for image in pair]


@pytest.mark.parametrize("name", sorted(PRIORS))
@pytest.mark.parametrize("key,task", [("IVF", "IVF"), ("IVF-gray", "IVF"), ("MEF", "MEF")])
def test_priors_give_finite_images_of_the_input_size(real_pair, name, key, task):
    a, b = _tensors(real_pair(key))
    box = (slice(None), slice(None), slice(3, 3 + 131), slice(5, 5 + 97))  # odd size 131 x 97
    a, b = a[box], b[box]
    fused = run_prior(name, a, b, task)
    assert fused.shape[-2:] == (131, 97)
    assert torch.isfinite(fused).all() and fused.min() >= 0 and fused.max() <= 1
    gray_inputs = a.shape[1] == 1 and b.shape[1] == 1
    assert fused.shape[1] == (1 if gray_inputs else 3)


@pytest.mark.parametrize("name", ["average", "max", "laplacian", "wavelet", "gff", "exposure", "focus_map",
                                  "two_scale_saliency"])
def test_fusing_an_image_with_itself_returns_it(real_pair, name):
    image, _ = _tensors(real_pair("IVF"))
    fused = PRIORS[name].fuse(image, image)
    assert (fused - image).abs().max() < 2e-3


def test_laplacian_pyramid_reconstructs_exactly(real_pair):
    image, _ = _tensors(real_pair("IVF"))
    torch.testing.assert_close(collapse(laplacian_pyramid(image, 5)), image, atol=1e-5, rtol=0)


def test_focus_map_picks_the_sharp_side():
    generator = torch.Generator().manual_seed(0)
    sharp = torch.rand(1, 1, 96, 128, generator=generator)
    blurred = torch.nn.functional.avg_pool2d(sharp, 9, stride=1, padding=4, count_include_pad=False)
    left = torch.zeros_like(sharp)
    left[..., :64] = 1
    a = left * sharp + (1 - left) * blurred  # sharp on the left
    b = (1 - left) * sharp + left * blurred  # sharp on the right
    fused = PRIORS["focus_map"].fuse(a, b)
    away_from_seam = torch.ones_like(sharp, dtype=torch.bool)
    away_from_seam[..., 56:72] = False  # the decision map is smoothed across the focus boundary
    focus_error = (fused - sharp)[away_from_seam].abs().mean()
    average_error = (PRIORS["average"].fuse(a, b) - sharp)[away_from_seam].abs().mean()
    assert focus_error < 0.1 * average_error


def test_priors_for_tasks():
    assert {p.name for p in priors_for("MFF")} == {"average", "laplacian", "wavelet", "gff", "focus_map"}
    assert "exposure" in {p.name for p in priors_for("MEF")}
    assert "two_scale_saliency" in {p.name for p in priors_for("MIF-PET")}
    with pytest.raises(ValueError, match="Unknown prior 'nope'. Known priors: average"):
        run_prior("nope", torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), "IVF")


def test_external_priors_read_other_methods_outputs():
    vifb = ExternalPriors(DATA / "IVF/VIFB")
    assert len(vifb.methods) == 25 and "SeAFusion" in vifb.methods
    paths = vifb.paths("carLight")
    assert len(paths) == 25
    image = vifb.load("SeAFusion", "carLight", (460, 630))
    assert image.shape[-2:] == (460, 630)
    # MEFB ships two FMMEF outputs at twice the input size: they come back at the pair's size.
    mefb = ExternalPriors(DATA / "MEF/MEFB")
    assert mefb.load("FMMEF", "Preschool", (708, 1064)).shape[-2:] == (708, 1064)
    with pytest.raises(FileNotFoundError, match="No output of SeAFusion for 'nothing'"):
        vifb.load("SeAFusion", "nothing", (10, 10))
    assert ExternalPriors(DATA / "MIF/Harvard_MRI_CT").methods == []
