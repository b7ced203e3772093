"""The training loss: flow matching on the straight path from coupling(a, b) to the pseudo-label, optionally
with the field's unsupervised fusion objectives on the one-step endpoint."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from kornia.filters import spatial_gradient
from kornia.metrics import ssim

from ..evaluation.fidelity import LIGHT_LEVEL, light_sources
from ..scheduler import FlowMatchFusionScheduler
from ..tasks import FAMILIES, get_task
from .fidelity import soft_mef_ssim, soft_mi, soft_qabf, soft_ssim, soft_vif


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
"""The terms used unless named (``edges`` is opt-in)."""

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
- MEF's intensity, gradient and structure are off (0): the per-pixel targets pull against smooth tone transitions;
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
        computed["edges"] = 1 - soft_qabf(endpoint, image_a, image_b).sum(dim=1)
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


# ---------------------------------------------------------------------------------------------- fidelity objective
FIDELITY_METRICS = {"MI": soft_mi, "VIF": soft_vif, "Qabf": functools.partial(soft_qabf, border=1),
                    "SSIM": soft_ssim}
"""The fidelity metrics the objective raises, each through its differentiable counterpart
(:mod:`fusionfm.training.fidelity`; Qabf without the crop's zero-padded outer ring)."""

FIDELITY_OFFSETS = {"MI": 0.05, "VIF": 0.05, "Qabf": 0.02, "SSIM": 1.0, "MEF-SSIM": 0.05}
"""Added to a metric (or a source's share of it) before its log-ratio to the start (:func:`log_gain`), so that a value
near zero (a flat crop has little Qabf or VIF to keep; SSIM lies in [-1, 1]) cannot dominate a batch."""


@dataclass(frozen=True)
class FidelityObjective:
    """Weights of the fidelity objective (:func:`fidelity_loss`).

    Args:
        metrics: metric name (of :data:`FIDELITY_METRICS`) -> weight of its :func:`log_gain` from the start.
        mef_ssim: weight of MEF-SSIM's gain against the pair, for exposure pairs (MEF).
        truth: weight of the gain in closeness to the truth (mean absolute error), for pairs that have one (the
            synthetic MEF and MFF pairs).
        range_weight: weight of the fused values' excess beyond both sources' range (grey levels past
            ``range_margin``), averaged over the pixels.
        range_margin: grey levels (0-255) beyond both sources that cost nothing (the fidelity goal counts values more
            than 10 levels outside both sources).
        white_weight: weight of the shortfall (grey levels) below a source that is clipped white (>= 250) in a
            compact region (:func:`light_sources`): a headlight, a lamp or the sun stays white.
        loss_weight: weight of each metric's loss below the start (its negative gain), on top of its weight in
            ``metrics``: the objective then trades no metric away for another.
        share_weight: weight of each source's share of a metric falling below the start's (the sum of the negative
            log-gains of the two shares). A copy of the richer source raises MI and VIF (MI of a copy is the source's
            whole entropy) while the other source's share collapses: this cost makes it a loss.
        white_from_darker: a region counts as clipped white where the darker source is (exposure pairs: a lamp or
            the sun is white in every exposure, while what only the over-exposed frame clips is to be recovered
            from the darker one); otherwise where either source is (a headlight the infrared image shows grey).
    """

    metrics: dict[str, float] = field(default_factory=lambda: {"MI": 1.0, "VIF": 1.0, "Qabf": 1.0, "SSIM": 1.0})
    mef_ssim: float = 0.0
    truth: float = 0.0
    range_weight: float = 0.1
    range_margin: float = 10.0
    white_weight: float = 0.1
    loss_weight: float = 0.0
    share_weight: float = 1.0
    white_from_darker: bool = False


def log_gain(value: torch.Tensor, start: torch.Tensor, offset: float) -> torch.Tensor:
    """log((value + offset) / (start + offset)), elementwise: above 0 where ``value`` is better than the start."""
    return torch.log(value + offset) - torch.log(start + offset)


def fidelity_terms(fused: torch.Tensor, start: torch.Tensor, batch: dict[str, torch.Tensor],
                   objective: FidelityObjective) -> dict[str, torch.Tensor]:
    """The objective's terms, each per sample (B,), for a fused endpoint and the start's fusion (B, 1, H, W) of a
    batch (``image_a``, ``image_b``, ``task_id``, and ``target``/``has_target`` where the truth is known). Metric
    terms are :func:`log_gain` of the metric from the start (positive: better; the truth term compares the mean
    absolute errors), each with its "share loss" (how far each source's share fell below the start's); ``range`` and
    ``white`` are costs in grey levels."""
    image_a, image_b = batch["image_a"].float(), batch["image_b"].float()
    terms = {}
    for name, weight in objective.metrics.items():
        if weight:
            metric = FIDELITY_METRICS[name]
            with torch.no_grad():
                at_start = metric(start, image_a, image_b)
            value, offset = metric(fused, image_a, image_b), FIDELITY_OFFSETS[name]
            terms[name] = log_gain(value.sum(dim=1), at_start.sum(dim=1), offset)
            terms[f"{name} share loss"] = F.relu(-log_gain(value, at_start, offset)).sum(dim=1)
    exposure = batch["task_id"] == get_task("MEF").class_id
    if objective.mef_ssim and bool(exposure.any()):
        frames = torch.cat([image_a, image_b], dim=1)
        value = soft_mef_ssim(fused, frames)
        with torch.no_grad():
            at_start = soft_mef_ssim(start, frames)
        terms["MEF-SSIM"] = log_gain(value, at_start, FIDELITY_OFFSETS["MEF-SSIM"]) * exposure.float()
    has_target = batch.get("has_target")
    if objective.truth and has_target is not None and bool(has_target.any()):
        target = batch["target"].float()
        error = (fused - target).abs().mean(dim=(1, 2, 3))
        at_start = (start - target).abs().mean(dim=(1, 2, 3))
        terms["truth"] = log_gain(-error, -at_start, 1 + 1 / 255) * has_target.float()
    lowest, highest = torch.minimum(image_a, image_b), torch.maximum(image_a, image_b)
    margin = objective.range_margin / 255
    excess = F.relu(fused - highest - margin) + F.relu(lowest - margin - fused)
    terms["range"] = 255 * excess.mean(dim=(1, 2, 3))
    white = lowest if objective.white_from_darker else highest
    lights = light_sources(white, level=LIGHT_LEVEL / 255)
    terms["white"] = 255 * (lights * F.relu(white - 3 / 255 - fused)).mean(dim=(1, 2, 3))
    return terms


FIDELITY_OBJECTIVES: dict[str, FidelityObjective] = {
    "IVF": FidelityObjective(loss_weight=2.0),
    "MIF": FidelityObjective(loss_weight=6.0),
    "MEF": FidelityObjective(loss_weight=2.0, mef_ssim=4.0, white_from_darker=True),
    "MFF": FidelityObjective(loss_weight=2.0, truth=1.0),
}
"""The objective of each task family, chosen on the validation split (docs/quality.md): MIF's metrics below the start
cost three times as much as IVF's (with 2, its SSIM gain of 5 % came with VIF 0.7-0.9 % below the start)."""


def fidelity_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor],
                  objectives: Mapping[str, FidelityObjective] | None = None) -> torch.Tensor:
    """Per-sample loss (B,) of the one-step fusion of a batch against its start: minus the weighted log-gains of the
    fidelity metrics (and of MEF-SSIM and the truth where they apply), plus the metrics' losses, their sources' share
    losses and the range and white costs, each sample by its task family's objective (``objectives``, default
    :data:`FIDELITY_OBJECTIVES`).

    The endpoint is one Euler step from x_t = (1 - t) x0 + t S at the batch's times t, S the model's untrained
    fusion (the start, :meth:`fusionfm.unet.FusionUNet.start_fusion`): from the coupling point ``x0`` at t = 0, the
    step one-step inference takes, and from points towards the fusion for the multi-step grid. ``batch`` as the
    :class:`~fusionfm.training.sampler.BatchSampler` draws it (without ``t``: every sample at t = 0).
    """
    objectives = FIDELITY_OBJECTIVES if objectives is None else objectives
    unet = getattr(model, "module", model)
    x0, image_a, image_b, task_id = batch["x0"], batch["image_a"], batch["image_b"], batch["task_id"]
    start = unet.start_fusion(image_a, image_b, task_id, batch.get("gain_shifts"))
    t = batch["t"].float() if "t" in batch else torch.zeros(len(x0), device=x0.device)
    x_t = FlowMatchFusionScheduler.interpolate(x0.float(), start, t)
    velocity = model(x_t, image_a, image_b, t, task_id, **_variant_kwargs(batch)).float()
    fused = x_t + (1 - t).view(-1, 1, 1, 1) * velocity
    losses = fused.new_zeros(len(fused))
    for family in FAMILIES:
        rows = task_id == get_task(family).class_id
        if not bool(rows.any()):
            continue
        if family not in objectives:
            raise ValueError(f"The batch holds {family} samples but the objectives name only {', '.join(objectives)}.")
        samples = {key: value[rows] for key, value in batch.items()
                   if isinstance(value, torch.Tensor) and len(value) == len(rows)}
        losses = losses.index_put((rows,), _objective_loss(fused[rows], start[rows], samples, objectives[family]))
    return losses


def _objective_loss(fused: torch.Tensor, start: torch.Tensor, batch: dict[str, torch.Tensor],
                    objective: FidelityObjective) -> torch.Tensor:
    terms = fidelity_terms(fused, start, batch, objective)
    gain = sum(weight * terms[name] - objective.loss_weight * F.relu(-terms[name])
               - objective.share_weight * terms[f"{name} share loss"]
               for name, weight in objective.metrics.items() if name in terms)
    gain = gain + objective.mef_ssim * terms.get("MEF-SSIM", 0.0) + objective.truth * terms.get("truth", 0.0)
    return -gain + objective.range_weight * terms["range"] + objective.white_weight * terms["white"]
