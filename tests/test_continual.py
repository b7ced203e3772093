"""EWC, the diagonal Fisher, the replay buffer, ACC and BWT."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from fusionfm.training.continual import (
    ElasticWeightConsolidation,
    ReplayBuffer,
    accuracy_and_backward_transfer,
    diagonal_fisher,
)


class TinyRegressor(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(3, 2)


def squared_error(model: TinyRegressor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return ((model.linear(batch["x"]) - batch["y"]) ** 2).sum(dim=1)


def test_fisher_equals_a_hand_computation():
    model = TinyRegressor()
    generator = torch.Generator().manual_seed(1)
    batches = [{"x": torch.randn(4, 3, generator=generator), "y": torch.randn(4, 2, generator=generator)}
               for _ in range(2)]
    fisher = diagonal_fisher(model, squared_error, batches)

    # By hand: loss_i = sum_k (W x_i + b - y_i)_k^2, so dL/dW = 2 r x^T and dL/db = 2 r with r = W x + b - y.
    weight, bias = model.linear.weight.detach(), model.linear.bias.detach()
    expected_w, expected_b = torch.zeros_like(weight), torch.zeros_like(bias)
    for batch in batches:
        for x, y in zip(batch["x"], batch["y"], strict=True):
            residual = weight @ x + bias - y
            expected_w += (2 * torch.outer(residual, x)) ** 2
            expected_b += (2 * residual) ** 2
    torch.testing.assert_close(fisher["linear.weight"], expected_w / 8)
    torch.testing.assert_close(fisher["linear.bias"], expected_b / 8)
    assert model.linear.weight.grad is None  # the Fisher leaves .grad alone


def test_fisher_does_not_depend_on_grouping():
    model = TinyRegressor()
    generator = torch.Generator().manual_seed(2)
    x, y = torch.randn(6, 3, generator=generator), torch.randn(6, 2, generator=generator)
    one = diagonal_fisher(model, squared_error, [{"x": x, "y": y}])
    three = diagonal_fisher(model, squared_error, [{"x": x[i:i + 2], "y": y[i:i + 2]} for i in range(0, 6, 2)])
    for name in one:
        torch.testing.assert_close(one[name], three[name])


def test_ewc_penalty_is_zero_at_the_anchor_and_grows_away_from_it():
    model = TinyRegressor()
    ewc = ElasticWeightConsolidation(strength=10.0)
    assert ewc.penalty(model).item() == 0.0  # no task consolidated yet
    fisher = {name: torch.full_like(p, 0.5) for name, p in model.named_parameters()}
    ewc.consolidate(model, fisher)
    assert ewc.penalty(model).item() == 0.0

    penalties = []
    for shift in (0.01, 0.1, 1.0):
        moved = TinyRegressor()
        with torch.no_grad():
            moved.linear.weight += shift
        penalties.append(ewc.penalty(moved).item())
    # (lambda / 2) * sum F d^2 = 5 * 0.5 * 6 * d^2 for the 6 weights moved by d.
    assert penalties == pytest.approx([15 * 0.01**2, 15 * 0.1**2, 15.0], rel=1e-5)


def test_ewc_penalty_gradient_pulls_towards_the_anchor():
    model = TinyRegressor()
    ewc = ElasticWeightConsolidation(strength=2.0)
    ewc.consolidate(model, {name: torch.ones_like(p) for name, p in model.named_parameters()})
    with torch.no_grad():
        model.linear.bias += 1.0
    ewc.penalty(model).backward()
    torch.testing.assert_close(model.linear.bias.grad, torch.full((2,), 2.0))  # lambda * F * (theta - theta*)


def test_online_ewc_accumulates_fishers_and_moves_the_anchor():
    model = TinyRegressor()
    ewc = ElasticWeightConsolidation(strength=1.0, decay=0.5)
    ones = {name: torch.ones_like(p) for name, p in model.named_parameters()}
    ewc.consolidate(model, ones)
    with torch.no_grad():
        model.linear.bias += 3.0
    ewc.consolidate(model, ones)
    torch.testing.assert_close(ewc.fisher["linear.bias"], torch.full((2,), 1.5))
    torch.testing.assert_close(ewc.anchor["linear.bias"], model.linear.bias.detach())
    assert ewc.tasks_consolidated == 2


def test_ewc_state_round_trips_through_safetensors():
    model = TinyRegressor()
    ewc = ElasticWeightConsolidation(strength=3.0, decay=0.9)
    ewc.consolidate(model, {name: torch.rand_like(p) for name, p in model.named_parameters()})
    restored = ElasticWeightConsolidation(strength=0.0)
    restored.load_state_dict(load_bytes(save_bytes(ewc.state_dict())))
    with torch.no_grad():
        model.linear.weight += 0.3
    assert restored.penalty(model).item() == pytest.approx(ewc.penalty(model).item())
    assert (restored.strength, restored.decay, restored.tasks_consolidated) == (3.0, 0.9, 1)


def test_replay_buffer_keeps_its_quota_per_task():
    buffer = ReplayBuffer(size_per_task=5)
    generator = torch.Generator().manual_seed(0)
    buffer.add_task("IVF", 100, generator)
    buffer.add_task("MIF", 3, generator)  # fewer samples than the quota: keeps all
    assert len(buffer.entries["IVF"]) == 5 and len(set(buffer.entries["IVF"])) == 5
    assert buffer.entries["MIF"] == [0, 1, 2]
    assert all(0 <= index < 100 for index in buffer.entries["IVF"])
    picks = buffer.sample(2000, generator)
    assert {task for task, _ in picks} == {"IVF", "MIF"}
    share_ivf = sum(task == "IVF" for task, _ in picks) / len(picks)
    assert 0.45 < share_ivf < 0.55  # tasks are balanced, not weighted by how many samples they keep
    assert all(index in buffer.entries[task] for task, index in picks)


def test_replay_buffer_mixes_the_set_share():
    buffer = ReplayBuffer(size_per_task=4)
    assert buffer.split_batch(8, 0.25) == (8, 0)  # nothing to replay during the first task
    buffer.add_task("IVF", 10, torch.Generator().manual_seed(0))
    assert buffer.split_batch(8, 0.25) == (6, 2)
    assert buffer.split_batch(8, 0.5) == (4, 4)
    assert buffer.split_batch(2, 0.1) == (1, 1)  # at least one replayed once the buffer has data
    assert buffer.split_batch(2, 0.9) == (1, 1)  # and at least one sample of the current task
    assert buffer.split_batch(8, 0.0) == (8, 0)


def test_replay_buffer_state_is_plain_json():
    import json

    buffer = ReplayBuffer(size_per_task=3)
    buffer.add_task("MEF", 50, torch.Generator().manual_seed(4))
    restored = ReplayBuffer(0)
    restored.load_state_dict(json.loads(json.dumps(buffer.state_dict())))
    assert restored.entries == buffer.entries and restored.size_per_task == 3


def test_replay_buffer_rejects_sampling_when_empty():
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(4).sample(1, torch.Generator())


def test_accuracy_and_backward_transfer():
    quality = [[0.8, 0.1, 0.2],
               [0.6, 0.9, 0.3],
               [0.5, 0.7, 1.0]]
    accuracy, backward = accuracy_and_backward_transfer(quality)
    assert accuracy == pytest.approx((0.5 + 0.7 + 1.0) / 3)
    assert backward == pytest.approx(((0.5 - 0.8) + (0.7 - 0.9)) / 2)
    assert accuracy_and_backward_transfer([[0.7]]) == (0.7, 0.0)
    with pytest.raises(ValueError, match="square"):
        accuracy_and_backward_transfer([[0.1, 0.2]])
