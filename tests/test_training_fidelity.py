"""fusionfm.training.fidelity: the differentiable metrics, by hand on tiny tensors and against the metrics on real
pairs; and the fidelity objective of fusionfm.training.losses built on them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fusionfm import build_unet
from fusionfm.evaluation.fidelity import light_sources
from fusionfm.metrics.fusion import mutual_information, qabf, ssim, to_gray_255, vif
from fusionfm.metrics.mef_ssim import mef_ssim
from fusionfm.priors import run_prior
from fusionfm.tasks import get_task
from fusionfm.training.fidelity import soft_mef_ssim, soft_mi, soft_qabf, soft_ssim, soft_vif
from fusionfm.training.losses import (
    FidelityObjective,
    fidelity_loss,
    fidelity_terms,
    log_gain,
)

QABF_CONSTANT = 0.9994 * 0.9879


def _random(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def _eight_bit(image: torch.Tensor) -> torch.Tensor:
    return (image * 255).round() / 255


def test_ssim_by_hand():
    """A copy of a source has SSIM 1 with it; a constant fusion of a constant source too (both flat: the constants
    alone), and a negated copy's structure term is -1 (luminance term by hand)."""
    a = _random(1, 1, 9, 9)
    b = torch.full_like(a, 0.5)
    torch.testing.assert_close(soft_ssim(a, a, b)[:, 0], torch.ones(1))
    torch.testing.assert_close(soft_ssim(b, a, b)[:, 1], torch.ones(1))
    negated = soft_ssim(1 - a, a, b)[:, 0]
    assert float(negated) < -0.5


def test_vif_by_hand():
    """A source's share of VIF is 1 for an exact copy of it; a flat fusion keeps almost nothing of either."""
    a, b = _random(1, 1, 96, 96), _random(1, 1, 96, 96, seed=1)
    copy = soft_vif(a, a, b)
    torch.testing.assert_close(copy[:, 0], torch.ones(1), atol=1e-4, rtol=0)
    assert float(soft_vif(torch.full_like(a, 0.5), a, b).sum()) < 0.01


def test_qabf_by_hand():
    """F = A = B: every edge kept at its strength and angle, Q = c sigmoid(7.5) sigmoid(4.4), split evenly between
    the two sources; F = A / 2 halves every strength (G = 0.5, sigmoid(0) = 0.5)."""
    a = _random(1, 1, 16, 16)
    kept = QABF_CONSTANT * torch.sigmoid(torch.tensor(7.5)) * torch.sigmoid(torch.tensor(4.4))
    torch.testing.assert_close(soft_qabf(a, a, a), (kept / 2).expand(1, 2), atol=1e-5, rtol=0)
    halved = QABF_CONSTANT * 0.5 * torch.sigmoid(torch.tensor(4.4))
    torch.testing.assert_close(soft_qabf(a / 2, a, a), (halved / 2).expand(1, 2), atol=1e-5, rtol=0)


def test_mutual_information_by_hand():
    """Two bins, a fusion equal to A with half its pixels in each bin: MI(F, A) = log 2 nats; a constant B shares
    nothing (MI 0); a value between two bins is shared linearly between them."""
    a = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])
    b = torch.full_like(a, 0.5)
    torch.testing.assert_close(soft_mi(a, a, b, bins=2), torch.tensor([[math.log(2), 0.0]]))
    # F = 0.5 everywhere: each pixel half in each bin, independent of A's bins: MI 0.
    torch.testing.assert_close(soft_mi(b, a, b, bins=2), torch.zeros(1, 2), atol=1e-6, rtol=0)


def test_sums_equal_the_metrics_on_a_real_pair(real_pair):
    """On 8-bit fusions of a real infrared-visible pair, the soft SSIM, VIF and Qabf sum to the benchmark metrics;
    the soft MI (64 bins) orders the fusions as the 256-bin MI does."""
    a, b = (to_gray_255(image)[..., :200, :240] / 255 for image in real_pair("IVF"))
    a, b = a.float(), b.float()
    fusions = {name: _eight_bit(run_prior(name, a, b, get_task("IVF")).clamp(0, 1)) for name in ("average", "max",
                                                                                                 "gff")}
    soft_mis, exact_mis = [], []
    for fused in fusions.values():
        exact = [x.double() * 255 for x in (fused, a, b)]
        torch.testing.assert_close(soft_ssim(fused, a, b).sum(1).double(), ssim(*exact), rtol=1e-4, atol=0)
        torch.testing.assert_close(soft_vif(fused, a, b).sum(1).double(), vif(*exact), rtol=1e-3, atol=0)
        torch.testing.assert_close(soft_qabf(fused, a, b).sum(1).double(), qabf(*exact), rtol=1e-3, atol=0)
        soft_mis.append(float(soft_mi(fused, a, b).sum()))
        exact_mis.append(float(mutual_information(*exact)))
    assert sorted(range(3), key=soft_mis.__getitem__) == sorted(range(3), key=exact_mis.__getitem__)


def test_gradients_are_finite_on_flat_and_real_regions(real_pair):
    a, b = (to_gray_255(image)[..., :96, :96].float() / 255 for image in real_pair("IVF"))
    b[..., :40, :40] = 0.5  # a flat patch
    fused = ((a + b) / 2).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as training runs them
        total = sum(metric(fused, a, b).sum() for metric in (soft_ssim, soft_vif, soft_qabf, soft_mi))
    total.backward()
    assert torch.isfinite(fused.grad).all() and fused.grad.abs().sum() > 0


def test_mef_ssim_equals_the_metric(real_pair):
    under, over = real_pair("MEF")
    frames = torch.stack([torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).float() / 255
                          for image in (under, over)])[..., :120, :160]
    gray = (0.299 * frames[:, 0] + 0.587 * frames[:, 1] + 0.114 * frames[:, 2])[:, None]
    fused = gray.mean(dim=0, keepdim=True)
    expected = mef_ssim(fused[0], gray)
    torch.testing.assert_close(soft_mef_ssim(fused, gray.transpose(0, 1)), torch.tensor([expected]), rtol=1e-5, atol=0)


def test_log_gain_and_share_loss_by_hand(ivf_batch):
    """A fusion that copies the infrared image raises MI's sum but loses the visible image's share: the share loss
    is that share's log-ratio."""
    torch.testing.assert_close(log_gain(torch.tensor([2.0]), torch.tensor([1.0]), 0.0), torch.tensor([math.log(2)]))
    start = (ivf_batch["image_a"] + ivf_batch["image_b"]) / 2
    objective = FidelityObjective(metrics={"MI": 1.0}, share_weight=1.0)
    copy_terms = fidelity_terms(ivf_batch["image_a"], start, ivf_batch, objective)
    shares_copy = soft_mi(ivf_batch["image_a"], ivf_batch["image_a"], ivf_batch["image_b"])
    shares_start = soft_mi(start, ivf_batch["image_a"], ivf_batch["image_b"])
    assert float(copy_terms["MI"]) > 0  # the sum rewards the copy
    expected = torch.log(shares_start[:, 1] + 0.05) - torch.log(shares_copy[:, 1] + 0.05)
    assert float(expected) > 0
    torch.testing.assert_close(copy_terms["MI share loss"], expected)


@pytest.fixture
def ivf_batch(real_pair):
    a, b = (to_gray_255(image)[..., :64, :64].float() / 255 for image in real_pair("IVF"))
    a[..., 10:14, 10:14] = 1.0  # a clipped lamp in the infrared image
    return {"image_a": a, "image_b": b, "x0": (a + b) / 2, "task_id": torch.tensor([get_task("IVF").class_id]),
            "has_target": torch.tensor([False]), "target": torch.zeros_like(a)}


def test_the_untrained_model_is_its_start(ivf_batch):
    """Gates at 0: the one-step fusion is the start itself, so every metric's gain is 0 and the loss is the range and
    white costs alone, which match a hand computation."""
    model = build_unet("default")
    start = model.start_fusion(ivf_batch["image_a"], ivf_batch["image_b"], ivf_batch["task_id"])
    objective = FidelityObjective(range_weight=0.1, white_weight=0.1, loss_weight=2.0)
    terms = fidelity_terms(start, start, ivf_batch, objective)
    for name in ("MI", "VIF", "Qabf", "SSIM"):
        torch.testing.assert_close(terms[name], torch.zeros(1))
    a, b = ivf_batch["image_a"], ivf_batch["image_b"]
    margin = 10 / 255
    excess = (start - torch.maximum(a, b) - margin).clamp_min(0) + (torch.minimum(a, b) - margin - start).clamp_min(0)
    short = light_sources(torch.maximum(a, b), level=250 / 255) * (torch.maximum(a, b) - 3 / 255 - start).clamp_min(0)
    torch.testing.assert_close(terms["range"], 255 * excess.mean().reshape(1))
    torch.testing.assert_close(terms["white"], 255 * short.mean().reshape(1))
    loss = fidelity_loss(model, ivf_batch, {"IVF": objective})
    # (the model's one step reproduces the start up to float rounding: its metric gains are 0 within 1e-5)
    torch.testing.assert_close(loss, 0.1 * terms["range"] + 0.1 * terms["white"], atol=1e-4, rtol=0)


def test_the_truth_term_rewards_nearness_to_the_truth(ivf_batch):
    batch = {**ivf_batch, "has_target": torch.tensor([True]), "target": ivf_batch["image_b"]}
    start = (batch["image_a"] + batch["image_b"]) / 2
    objective = FidelityObjective(metrics={}, truth=1.0)
    nearer = fidelity_terms(0.25 * batch["image_a"] + 0.75 * batch["image_b"], start, batch, objective)["truth"]
    farther = fidelity_terms(batch["image_a"], start, batch, objective)["truth"]
    assert float(nearer) > 0 > float(farther)
