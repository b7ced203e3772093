"""The training loss: flow matching on the straight path from coupling(a, b) to the pseudo-label."""

from __future__ import annotations

import torch

from ..scheduler import FlowMatchFusionScheduler


def flow_matching_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor],
                       gradient_weight: float = 0.0) -> torch.Tensor:
    """Per-sample loss (B,): mean squared error between v_theta(x_t) and the straight-flow velocity, plus
    ``gradient_weight`` times the mean squared error of their horizontal and vertical differences.

    ``batch`` holds ``x0``, ``target`` (x1), ``image_a``, ``image_b``: (B, 1, H, W) in [0, 1] (x0 per the
    coupling), ``t``: (B,) in [0, 1) and ``task_id``: (B,) long.

    The gradient term is an edge loss on the predicted image, since v - v* = (x1_hat - x1) / (1 - t).
    Plain MSE lets a model soften the strongest source edges at little cost, which edge metrics such as
    Qabf punish.
    """
    x0, x1 = batch["x0"], batch["target"]
    x_t = FlowMatchFusionScheduler.interpolate(x0, x1, batch["t"])
    prediction = model(x_t, batch["image_a"], batch["image_b"], batch["t"], batch["task_id"])
    error = prediction.float() - FlowMatchFusionScheduler.velocity_target(x0, x1)
    loss = (error**2).mean(dim=(1, 2, 3))
    if gradient_weight > 0:
        horizontal = error[..., :, 1:] - error[..., :, :-1]
        vertical = error[..., 1:, :] - error[..., :-1, :]
        loss = loss + gradient_weight * ((horizontal**2).mean(dim=(1, 2, 3)) + (vertical**2).mean(dim=(1, 2, 3)))
    return loss
