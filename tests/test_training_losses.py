"""fusionfm.training.losses: the flow-matching loss and its edge term, by hand."""

from __future__ import annotations

import torch

from fusionfm.training.losses import flow_matching_loss


def test_gradient_loss_term_penalises_edge_errors_only():
    """With a model that returns the target velocity plus an error image, the gradient term adds the
    weighted mean squared differences of that error: zero for a constant offset, positive for a ramp."""
    height, width = 6, 5
    x0, x1 = torch.rand(2, 1, 1, height, width, generator=torch.Generator().manual_seed(0))
    batch = {"x0": x0, "target": x1, "t": torch.tensor([0.3]), "image_a": x0, "image_b": x1,
             "task_id": torch.tensor([0])}
    ramp = torch.arange(width, dtype=torch.float32).expand(1, 1, height, width) * 0.1

    def model_with_error(error):
        return lambda x_t, a, b, t, task: (x1 - x0) + error

    constant = flow_matching_loss(model_with_error(torch.full_like(x0, 0.2)), batch, 4.0)
    torch.testing.assert_close(constant, torch.tensor([0.04]))
    plain = flow_matching_loss(model_with_error(ramp), batch, 0.0)
    with_edges = flow_matching_loss(model_with_error(ramp), batch, 4.0)
    torch.testing.assert_close(plain, (ramp**2).mean().reshape(1))
    torch.testing.assert_close(with_edges, plain + 4.0 * 0.01)  # horizontal steps of 0.1, none vertical


def test_the_model_sees_the_point_on_the_path():
    x0 = torch.zeros(1, 1, 2, 2)
    x1 = torch.ones(1, 1, 2, 2)
    seen = {}

    def model(x_t, a, b, t, task):
        seen["x_t"] = x_t
        return torch.zeros_like(x_t)

    batch = {"x0": x0, "target": x1, "t": torch.tensor([0.25]), "image_a": x0, "image_b": x1,
             "task_id": torch.tensor([1])}
    loss = flow_matching_loss(model, batch)
    torch.testing.assert_close(seen["x_t"], torch.full_like(x0, 0.25))
    torch.testing.assert_close(loss, torch.tensor([1.0]))  # velocity target 1 everywhere, prediction 0
