"""fusionfm.metrics.fusion reproduces the field's evaluator on the golden triples, and batches correctly."""

from __future__ import annotations

import csv

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import SHARED

from fusionfm.metrics.fusion import METRIC_NAMES, fusion_metrics, to_gray_255

GOLDEN = SHARED / "golden"
ROWS = list(csv.DictReader((GOLDEN / "metrics_reference.csv").open(newline="")))


def _gray(name: str) -> torch.Tensor:
    return torch.from_numpy(np.asarray(PIL.Image.open(GOLDEN / "images" / name), dtype=np.float32).copy())


@pytest.mark.parametrize("row", ROWS, ids=[f"{r['dataset']}-{r['stem']}-{r['fused']}" for r in ROWS])
def test_golden_values(row):
    metrics = fusion_metrics(_gray(row["image_f"]), _gray(row["image_a"]), _gray(row["image_b"]))
    for name in METRIC_NAMES:
        reference = float(row[name])
        assert metrics[name].item() == pytest.approx(reference, rel=1e-4), name  # the README promises 1e-4


def test_golden_ssim_with_the_8_bit_range():
    row = ROWS[0]
    from fusionfm.metrics.fusion import ssim

    value = ssim(_gray(row["image_f"]), _gray(row["image_a"]), _gray(row["image_b"]), data_range=255)
    assert value.item() == pytest.approx(float(row["SSIM_255"]), rel=1e-4)


def test_a_batch_equals_one_at_a_time():
    same_size = [r for r in ROWS if r["stem"] == "carLight"]
    fused = torch.stack([_gray(r["image_f"]) for r in same_size])
    a = torch.stack([_gray(r["image_a"]) for r in same_size])
    b = torch.stack([_gray(r["image_b"]) for r in same_size])
    batched = fusion_metrics(fused, a, b)
    for index in range(len(same_size)):
        single = fusion_metrics(fused[index], a[index], b[index])
        for name in METRIC_NAMES:
            torch.testing.assert_close(batched[name][index], single[name][0], rtol=1e-12, atol=1e-12)


def test_fusing_a_source_with_itself_is_perfect_on_reference_metrics():
    a = _gray(ROWS[0]["image_a"])
    metrics = fusion_metrics(a, a, a)
    assert metrics["SSIM"].item() == pytest.approx(2.0, abs=1e-9)
    assert metrics["CC"].item() == pytest.approx(1.0, abs=1e-9)
    assert metrics["MSE"].item() == 0
    assert metrics["Qabf"].item() > 0.9  # the sigmoid constants cap a perfect match just below 1


def test_a_fusion_that_copies_one_source_has_a_finite_scd():
    # F = A makes F - A constant, whose correlation with B is undefined; it counts as 0 (no shared information),
    # so SCD is corr(A, A - B) alone and rankings stay defined (the GFF prior copies the MRI of some PET pairs).
    a, b = _gray(ROWS[0]["image_a"]), _gray(ROWS[0]["image_b"])
    metrics = fusion_metrics(a, a, b)
    a64, b64 = a.double() - a.double().mean(), b.double()
    diff = (a.double() - b64) - (a.double() - b64).mean()
    expected = (a64 * diff).sum() / torch.sqrt((a64 * a64).sum() * (diff * diff).sum())
    assert metrics["SCD"].item() == pytest.approx(expected.item(), rel=1e-9)


def test_to_gray_255_matches_pil_luma(real_pair):
    _, vi = real_pair("IVF")
    from_pil = to_gray_255(vi)
    from_tensor = to_gray_255(torch.from_numpy(np.array(vi)).permute(2, 0, 1).float() / 255)
    assert from_pil.shape == (1, 1, vi.size[1], vi.size[0])
    torch.testing.assert_close(from_pil, from_tensor, atol=1.0, rtol=0)  # PIL rounds its luma slightly differently


def test_bad_shapes():
    with pytest.raises(ValueError, match="Metrics take gray images"):
        fusion_metrics(torch.zeros(1, 3, 8, 8), torch.zeros(8, 8), torch.zeros(8, 8))


@pytest.mark.parametrize("data_range", [2.0, 255.0])
def test_ssim_equals_scikit_image(real_pair, data_range):
    """scikit-image's structural_similarity is the reference implementation our SSIM follows."""
    from skimage.metrics import structural_similarity

    from fusionfm.metrics.fusion import ssim

    ir, vi = real_pair("IVF")
    a, b = to_gray_255(ir), to_gray_255(vi)
    fused = ((a + b) / 2).round()
    ours = ssim(fused, a, b, data_range=data_range).item()
    as_numpy = [x[0, 0].numpy() for x in (fused, a, b)]
    reference = sum(structural_similarity(as_numpy[0], other, data_range=data_range) for other in as_numpy[1:])
    assert ours == pytest.approx(reference, rel=1e-9)
