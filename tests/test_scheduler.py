"""FlowMatchFusionScheduler: couplings, the path, the time grid, the Euler step, config round trip."""

from __future__ import annotations

import pytest
import torch

from fusionfm import FlowMatchFusionScheduler


@pytest.fixture()
def luminances():
    generator = torch.Generator().manual_seed(0)
    return torch.rand(2, 1, 8, 8, generator=generator), torch.rand(2, 1, 8, 8, generator=generator)


def test_couplings(luminances):
    a, b = luminances
    torch.testing.assert_close(FlowMatchFusionScheduler("mean").source_point(a, b), (a + b) / 2)
    torch.testing.assert_close(FlowMatchFusionScheduler("sum").source_point(a, b), a + b)
    gaussian = FlowMatchFusionScheduler("gaussian")
    noise = gaussian.source_point(a, b, torch.Generator().manual_seed(3))
    assert noise.shape == a.shape
    torch.testing.assert_close(noise, gaussian.source_point(a, b, torch.Generator().manual_seed(3)))
    assert abs(noise.mean().item()) < 0.3 and 0.7 < noise.std().item() < 1.3


def test_path_and_velocity(luminances):
    x0, x1 = luminances
    t = torch.tensor([0.0, 1.0])
    path = FlowMatchFusionScheduler.interpolate(x0, x1, t)
    torch.testing.assert_close(path[0], x0[0])
    torch.testing.assert_close(path[1], x1[1])
    middle = FlowMatchFusionScheduler.interpolate(x0, x1, torch.tensor([0.25, 0.25]))
    torch.testing.assert_close(middle, 0.75 * x0 + 0.25 * x1)
    velocity = FlowMatchFusionScheduler.velocity_target(x0, x1)
    # Along a straight path, one Euler step with the true velocity reaches the target exactly.
    torch.testing.assert_close(x0 + velocity, x1)


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_euler_with_the_true_velocity_lands_on_the_target(luminances, steps):
    x0, x1 = luminances
    scheduler = FlowMatchFusionScheduler()
    scheduler.set_timesteps(steps)
    assert len(scheduler.timesteps) == steps
    torch.testing.assert_close(scheduler.timesteps, torch.arange(steps) / steps)
    x = x0
    for t in scheduler.timesteps:
        x = scheduler.step(FlowMatchFusionScheduler.velocity_target(x0, x1), t, x).prev_sample
    torch.testing.assert_close(x, x1)


def test_step_sizes_follow_the_grid():
    scheduler = FlowMatchFusionScheduler(time_shift=3.0)
    scheduler.set_timesteps(4)
    grid = scheduler.time_grid
    assert grid[0] == 0 and grid[-1] == 1 and bool((grid[1:] > grid[:-1]).all())
    assert grid[1] > 0.25  # the shift moves early times up
    sample = torch.zeros(1, 1, 2, 2)
    for index, t in enumerate(scheduler.timesteps):
        moved = scheduler.step(torch.ones_like(sample), t, sample).prev_sample
        torch.testing.assert_close(moved, sample + (grid[index + 1] - grid[index]))


def test_the_step_index_advances_and_resets():
    scheduler = FlowMatchFusionScheduler()
    scheduler.set_timesteps(3)
    assert scheduler.step_index is None
    sample = torch.zeros(1)
    for expected, t in enumerate(scheduler.timesteps, start=1):
        sample = scheduler.step(torch.ones(1), t, sample).prev_sample
        assert scheduler.step_index == expected
    torch.testing.assert_close(sample, torch.ones(1))
    with pytest.raises(ValueError, match="call set_timesteps"):
        scheduler.step(torch.ones(1), scheduler.timesteps[-1], sample)
    scheduler.set_timesteps(3)
    assert scheduler.step_index is None
    # A first step may start part way along the grid (as diffusers' schedulers allow); the index follows.
    scheduler.step(torch.ones(1), scheduler.timesteps[1], torch.zeros(1))
    assert scheduler.step_index == 2


def test_step_rejects_a_time_off_the_grid():
    scheduler = FlowMatchFusionScheduler()
    scheduler.set_timesteps(2)
    with pytest.raises(ValueError, match="not on the grid"):
        scheduler.step(torch.zeros(1), 0.3, torch.zeros(1))


@pytest.mark.parametrize("steps", [0, -1, 1.0, "2"])
def test_invalid_step_counts(steps):
    with pytest.raises(ValueError, match="num_inference_steps must be an integer >= 1"):
        FlowMatchFusionScheduler().set_timesteps(steps)


@pytest.mark.parametrize("kwargs,message", [
    (dict(coupling="median"), "Unknown coupling 'median'; choose one of mean, sum, gaussian"),
    (dict(time_sampling="beta"), "Unknown time_sampling 'beta'"),
    (dict(time_shift=0), "time_shift must be > 0"),
    (dict(start_share=1.5), r"start_share must be in \[0, 1\]"),
])
def test_invalid_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FlowMatchFusionScheduler(**kwargs)


@pytest.mark.parametrize("sampling", ["uniform", "logit_normal"])
def test_time_sampling(sampling):
    scheduler = FlowMatchFusionScheduler(time_sampling=sampling)
    t = scheduler.sample_time(4096, torch.Generator().manual_seed(0))
    assert t.shape == (4096,) and t.min() >= 0 and t.max() < 1
    torch.testing.assert_close(t, scheduler.sample_time(4096, torch.Generator().manual_seed(0)))
    assert abs(t.mean().item() - 0.5) < 0.03
    spread = t.std().item()
    assert (0.27 < spread < 0.31) if sampling == "uniform" else (spread < 0.25)  # logit-normal: centred


def test_start_share_puts_that_share_of_times_at_zero():
    generator = torch.Generator().manual_seed(0)
    t = FlowMatchFusionScheduler(start_share=0.3).sample_time(20000, generator)
    assert abs((t == 0).float().mean().item() - 0.3) < 0.02
    assert abs(t[t > 0].mean().item() - 0.5) < 0.02  # the rest stay uniform
    assert (FlowMatchFusionScheduler().sample_time(20000, generator) == 0).sum() == 0


def test_config_round_trip(tmp_path):
    FlowMatchFusionScheduler(coupling="sum", time_shift=2.0).save_pretrained(tmp_path)
    assert (tmp_path / "scheduler_config.json").is_file()
    loaded = FlowMatchFusionScheduler.from_pretrained(tmp_path)
    assert loaded.config.coupling == "sum" and loaded.config.time_shift == 2.0


def test_a_fresh_scheduler_holds_the_one_step_grid():
    scheduler = FlowMatchFusionScheduler()
    torch.testing.assert_close(scheduler.time_grid, torch.tensor([0.0, 1.0]))
    sample = scheduler.step(torch.full((1,), 0.25), scheduler.timesteps[0], torch.zeros(1)).prev_sample
    torch.testing.assert_close(sample, torch.full((1,), 0.25))
