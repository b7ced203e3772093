"""The training loss: flow matching on the straight path from coupling(a, b) to the pseudo-label, optionally
with the field's unsupervised fusion objectives on the one-step endpoint."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from kornia.filters import spatial_gradient
from kornia.metrics import ssim

from ..scheduler import FlowMatchFusionScheduler
from ..tasks import get_task


def flow_matching_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor],
                       gradient_weight: float = 0.0) -> torch.Tensor:
    """Per-sample loss (B,): mean squared error between v_theta(x_t) and the straight-flow velocity, plus
    ``gradient_weight`` times the mean squared error of their horizontal and vertical differences.

    ``batch`` holds ``x0``, ``target`` (x1), ``image_a``, ``image_b``: (B, 1, H, W) in [0, 1] (x0 per the
    coupling), ``t``: (B,) in [0, 1), ``task_id``: (B,) long and, for task variants with their own start gains,
    ``gain_shifts``: (B, L - 1) (:meth:`fusionfm.unet.FusionUNet.gain_shifts_for`).

    The gradient term is an edge loss on the predicted image, since v - v* = (x1_hat - x1) / (1 - t).
    Plain MSE lets a model soften the strongest source edges at little cost, which edge metrics such as
    Qabf punish.
    """
    x0, x1 = batch["x0"], batch["target"]
    x_t = FlowMatchFusionScheduler.interpolate(x0, x1, batch["t"])
    prediction = model(x_t, batch["image_a"], batch["image_b"], batch["t"], batch["task_id"],
                       **_variant_kwargs(batch))
    return _flow_terms(prediction.float(), x0, x1, gradient_weight)


def _variant_kwargs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Only a model that starts task variants at their own gains gets them (the other heads take no such input).
    return {"gain_shifts": batch["gain_shifts"]} if "gain_shifts" in batch else {}


def _flow_terms(prediction: torch.Tensor, x0: torch.Tensor, x1: torch.Tensor, gradient_weight: float) -> torch.Tensor:
    error = prediction - FlowMatchFusionScheduler.velocity_target(x0, x1)
    loss = (error**2).mean(dim=(1, 2, 3))
    if gradient_weight > 0:
        horizontal = error[..., :, 1:] - error[..., :, :-1]
        vertical = error[..., 1:, :] - error[..., :-1, :]
        loss = loss + gradient_weight * ((horizontal**2).mean(dim=(1, 2, 3)) + (vertical**2).mean(dim=(1, 2, 3)))
    return loss


# ---------------------------------------------------------------------------------------------- endpoint terms
ENDPOINT_TERMS = ("intensity", "gradient", "structure", "edges")
DEFAULT_ENDPOINT_TERMS = ("intensity", "gradient", "structure")
"""The terms used unless named: ``edges`` came later (session 16) and is opt-in, so earlier recipes run as before."""

ENDPOINT_LOSS_WEIGHTS: dict[str, dict[str, float]] = {
    "IVF": {"intensity": 1.0, "gradient": 1.0, "structure": 0.5, "edges": 1.0},
    "MIF": {"intensity": 1.0, "gradient": 1.0, "structure": 0.5, "edges": 1.0},
    "MEF": {"intensity": 0.0, "gradient": 0.0, "structure": 0.0, "edges": 1.0},
    "MFF": {"intensity": 0.0, "gradient": 1.0, "structure": 0.5, "edges": 1.0},
}
"""Per-task weights of the unsupervised fusion objectives on the one-step endpoint (rows by task family):

- intensity: L1 to a per-pixel intensity target: the brighter source for IVF and MIF (thermal targets and
  bone/tracer signal are bright, as in SeAFusion- and U2Fusion-style losses), the better-exposed source (closer
  to mid-grey) for MEF; none for MFF, where both sources have the right intensity;
- MEF's intensity, gradient and structure are off (0): with intensity 0.5, gradient 1 and structure 0.5 its
  validation score fell from 0.52-0.57 to 0.35-0.39 and a border band appeared (docs/quality.md); the per-pixel
  targets pull against smooth tone transitions;
- gradient: L1 between the endpoint's Sobel gradient magnitude and the larger of the two sources' (per pixel):
  keep the strongest edge of either source;
- structure: 1 - the mean of SSIM(endpoint, a) and SSIM(endpoint, b) (11 x 11 Gaussian windows);
- edges: 1 - a differentiable Qabf (:func:`soft_qabf`): keep each source's edges at their own strength and
  orientation, weighted by that source's edge strength, as the benchmarks' Qabf does.
The script's ``--endpoint_loss_weight`` scales the whole table (0: plain flow matching).
"""


def _sobel(image: torch.Tensor, epsilon: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sobel responses gx, gy and strength sqrt(gx^2 + gy^2 + epsilon) of (B, 1, H, W), each (B, 1, H, W); the
    epsilon keeps the strength's slope finite where the image is flat."""
    gradient = spatial_gradient(image, mode="sobel", normalized=True)  # (B, 1, 2, H, W)
    gx, gy = gradient[:, :, 0], gradient[:, :, 1]
    return gx, gy, (gx.square() + gy.square()).add(epsilon).sqrt()


def _gradient_magnitude(image: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude of (B, 1, H, W): (B, 1, H, W)."""
    return _sobel(image)[2]


def soft_qabf(fused: torch.Tensor, image_a: torch.Tensor, image_b: torch.Tensor) -> torch.Tensor:
    """Qabf (Xydeas and Petrovic 2000) made differentiable, per sample (B,), for (B, 1, H, W) images in [0, 1].

    As :func:`fusionfm.evaluation.metrics.qabf`: per pixel, Q^{SF} = sigmoid(15 (G - 0.5)) sigmoid(22 (A - 0.8)),
    G the ratio of the smaller to the larger Sobel strength of source S and fused, A = 1 - 2 theta / pi with theta
    the angle between their edge orientations (in [0, pi/2]; the metric's arctan difference, without its wrap at
    +-pi/2), averaged with weights g_S over both sources. The benchmark's normalising constants (~0.99) are left out.
    """
    # float32 even under bf16 autocast: near-parallel edges need acos's slope just below 1, where bf16 rounds to 1.
    with torch.autocast(fused.device.type, enabled=False):
        gx_f, gy_f, g_f = _sobel(fused.float(), 1e-10)
        total, weight = 0.0, 0.0
        for source in (image_a, image_b):
            gx_s, gy_s, g_s = _sobel(source.float(), 1e-10)
            ratio = torch.minimum(g_s, g_f) / torch.maximum(g_s, g_f)
            cosine = ((gx_s * gx_f + gy_s * gy_f).abs() / (g_s * g_f)).clamp(0.0, 1.0 - 1e-6)
            alignment = 1 - torch.acos(cosine) * (2 / math.pi)
            preserved = torch.sigmoid(15 * (ratio - 0.5)) * torch.sigmoid(22 * (alignment - 0.8))
            total = total + (preserved * g_s).sum(dim=(1, 2, 3))
            weight = weight + g_s.sum(dim=(1, 2, 3))
        return total / weight


def intensity_target(image_a: torch.Tensor, image_b: torch.Tensor, family: torch.Tensor) -> torch.Tensor:
    """Per-pixel intensity targets (B, 1, H, W) for sources (B, 1, H, W) and task class ids ``family`` (B,):
    max(a, b) for IVF/MIF, the source closer to 0.5 for MEF, the mean for MFF (whose weight is 0)."""
    brighter = torch.maximum(image_a, image_b)
    better_exposed = torch.where((image_a - 0.5).abs() <= (image_b - 0.5).abs(), image_a, image_b)
    mef = (family == get_task("MEF").class_id).view(-1, 1, 1, 1)
    mff = (family == get_task("MFF").class_id).view(-1, 1, 1, 1)
    return torch.where(mef, better_exposed, torch.where(mff, (image_a + image_b) / 2, brighter))


def endpoint_terms(endpoint: torch.Tensor, image_a: torch.Tensor, image_b: torch.Tensor, family: torch.Tensor,
                   terms: Sequence[str] = ENDPOINT_TERMS) -> dict[str, torch.Tensor]:
    """The unsupervised objectives ``terms`` (of :data:`ENDPOINT_TERMS`) of an endpoint (B, 1, H, W), each per
    sample (B,); only the named ones are computed (a training step pays for the terms it uses)."""
    computed = {}
    if "intensity" in terms:
        computed["intensity"] = (endpoint - intensity_target(image_a, image_b, family)).abs().mean(dim=(1, 2, 3))
    if "gradient" in terms:
        strongest = torch.maximum(_gradient_magnitude(image_a), _gradient_magnitude(image_b))
        computed["gradient"] = (_gradient_magnitude(endpoint) - strongest).abs().mean(dim=(1, 2, 3))
    if "structure" in terms:
        similarity = (ssim(endpoint, image_a, 11) + ssim(endpoint, image_b, 11)).mean(dim=(1, 2, 3)) / 2
        computed["structure"] = 1 - similarity
    if "edges" in terms:
        computed["edges"] = 1 - soft_qabf(endpoint, image_a, image_b)
    return computed


def endpoint_weights(task_ids: torch.Tensor, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """Per-sample weights (B,) of each endpoint term from :data:`ENDPOINT_LOSS_WEIGHTS`, times ``scale``."""
    by_class = {get_task(family).class_id: row for family, row in ENDPOINT_LOSS_WEIGHTS.items()}
    return {term: torch.tensor([scale * by_class[int(i)][term] for i in task_ids], device=task_ids.device)
            for term in ENDPOINT_TERMS}


def fusion_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], gradient_weight: float = 0.0,
                endpoint_weight: float = 0.0, use_terms: Sequence[str] = DEFAULT_ENDPOINT_TERMS,
                label_weight: float = 1.0) -> torch.Tensor:
    """Per-sample loss (B,): ``label_weight`` times :func:`flow_matching_loss` (the pseudo-label term) plus, with
    ``endpoint_weight`` > 0, the weighted endpoint terms on x1_hat = x_t + (1 - t) v_theta, the point one Euler
    step from x_t lands on (only those named in ``use_terms``: the per-term ablation)."""
    unknown = set(use_terms) - set(ENDPOINT_TERMS)
    if unknown:
        raise ValueError(f"Unknown endpoint terms {sorted(unknown)}; known: {', '.join(ENDPOINT_TERMS)}.")
    x0, x1, t = batch["x0"], batch["target"], batch["t"]
    x_t = FlowMatchFusionScheduler.interpolate(x0, x1, t)
    prediction = model(x_t, batch["image_a"], batch["image_b"], t, batch["task_id"], **_variant_kwargs(batch)).float()
    loss = label_weight * _flow_terms(prediction, x0, x1, gradient_weight)
    if endpoint_weight > 0:
        endpoint = x_t + (1 - t.float()).view(-1, 1, 1, 1) * prediction
        terms = endpoint_terms(endpoint, batch["image_a"].float(), batch["image_b"].float(), batch["task_id"],
                               use_terms)
        weights = endpoint_weights(batch["task_id"], endpoint_weight)
        loss = loss + sum(weights[term] * terms[term] for term in use_terms)
    return loss
