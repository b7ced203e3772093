"""The one-step flow-matching scheduler: the single definition of FusionFM's flow.

Training and inference share it:

- source point  x0 = coupling(a, b): ``mean`` (a + b) / 2, ``sum`` a + b, or ``gaussian`` noise;
- path          x_t = (1 - t) x0 + t x1, with x1 the target (pseudo-label) luminance;
- velocity      v = x1 - x0;
- Euler update  x_{k+1} = x_k + (t_{k+1} - t_k) v_theta(x_k, t_k).

With a straight flow, one Euler step from t = 0 to t = 1 lands on the target.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput

COUPLINGS = ("mean", "sum", "gaussian")
TIME_SAMPLINGS = ("uniform", "logit_normal")


@dataclass
class FlowMatchFusionSchedulerOutput(BaseOutput):
    """Output of :meth:`FlowMatchFusionScheduler.step`.

    Args:
        prev_sample: (B, 1, H, W) the point after the Euler update (named as in diffusers).
    """

    prev_sample: torch.Tensor


class FlowMatchFusionScheduler(SchedulerMixin, ConfigMixin):
    """Owns the coupling, the training-time distribution and the inference time grid.

    Args:
        coupling: how the source point is built from the two inputs: ``"mean"``, ``"sum"`` or
            ``"gaussian"`` (pure noise, the diffusion-like baseline).
        time_sampling: distribution of t during training: ``"uniform"`` on [0, 1] or
            ``"logit_normal"`` (sigmoid of a normal with ``logit_mean``, ``logit_std``).
        logit_mean, logit_std: parameters of the logit-normal distribution.
        start_share: share of training samples put at t = 0, the only time that one-step inference
            evaluates; the rest follow ``time_sampling`` and keep the multi-step path trained.
        time_shift: warps the inference grid t -> s t / (1 + (s - 1) t); 1.0 is a uniform grid.
    """

    config_name = "scheduler_config.json"
    order = 1

    @register_to_config
    def __init__(
        self,
        coupling: str = "mean",
        time_sampling: str = "uniform",
        logit_mean: float = 0.0,
        logit_std: float = 1.0,
        time_shift: float = 1.0,
        start_share: float = 0.0,
    ) -> None:
        if coupling not in COUPLINGS:
            raise ValueError(f"Unknown coupling {coupling!r}; choose one of {', '.join(COUPLINGS)}.")
        if time_sampling not in TIME_SAMPLINGS:
            raise ValueError(f"Unknown time_sampling {time_sampling!r}; choose one of {', '.join(TIME_SAMPLINGS)}.")
        if time_shift <= 0:
            raise ValueError(f"time_shift must be > 0, got {time_shift}.")
        if not 0.0 <= start_share <= 1.0:
            raise ValueError(f"start_share must be in [0, 1], got {start_share}.")
        self.set_timesteps(1)  # the one-step grid until a call asks for another

    # ------------------------------------------------------------------ the flow
    def source_point(
        self, image_a: torch.Tensor, image_b: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """x0 from the two source luminances (B, 1, H, W) in [0, 1]."""
        coupling = self.config.coupling
        if coupling == "mean":
            return (image_a + image_b) / 2
        if coupling == "sum":
            return image_a + image_b
        noise = torch.randn(image_a.shape, generator=generator, dtype=torch.float32, device="cpu")
        return noise.to(device=image_a.device, dtype=image_a.dtype)

    @staticmethod
    def interpolate(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = (1 - t) x0 + t x1 with t of shape (B,)."""
        t = t.to(x0.dtype).view(-1, *([1] * (x0.ndim - 1)))
        return (1 - t) * x0 + t * x1

    @staticmethod
    def velocity_target(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """The straight-flow velocity v = x1 - x0 (constant along the path)."""
        return x1 - x0

    def sample_time(
        self, batch_size: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """Training times t of shape (batch_size,) in [0, 1), per the configured distribution
        (drawn by diffusers' ``compute_density_for_timestep_sampling``, as its SD3 / flow examples do)."""
        # Imported here: only training samples times, and the module costs inference 0.3 s of import time.
        from diffusers.training_utils import compute_density_for_timestep_sampling

        t = compute_density_for_timestep_sampling(
            self.config.time_sampling, batch_size, logit_mean=self.config.logit_mean,
            logit_std=self.config.logit_std, generator=generator,
        )
        if self.config.start_share > 0:
            t = torch.where(torch.rand(batch_size, generator=generator) < self.config.start_share, 0.0, t)
        return t.clamp(0.0, 1.0 - 1e-6).to(device)

    # ------------------------------------------------------------------ inference
    def set_timesteps(self, num_inference_steps: int = 1, device: torch.device | str | None = None) -> None:
        """Build the grid t_0 = 0 < ... < t_N = 1; ``timesteps`` holds the N evaluation times."""
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be an integer >= 1, got {num_inference_steps!r}.")
        grid = torch.linspace(0.0, 1.0, num_inference_steps + 1, dtype=torch.float64)
        shift = self.config.time_shift
        grid = shift * grid / (1 + (shift - 1) * grid)
        self.time_grid = grid.float().to(device)
        self.timesteps = self.time_grid[:-1]
        self.num_inference_steps = num_inference_steps
        self._grid_steps = (self.time_grid[1:] - self.time_grid[:-1]).cpu().tolist()
        self._step_index = None

    @property
    def step_index(self) -> int | None:
        """Index of the next step into ``timesteps`` (None before the first step after ``set_timesteps``)."""
        return self._step_index

    def _index_of(self, timestep: float | torch.Tensor) -> int:
        matches = (self.timesteps.cpu() - float(timestep)).abs() < 1e-6
        if not bool(matches.any()):
            raise ValueError(f"timestep {float(timestep)} is not on the grid; call set_timesteps first.")
        return int(matches.nonzero()[0])

    def step(
        self, model_output: torch.Tensor, timestep: float | torch.Tensor, sample: torch.Tensor,
        return_dict: bool = True,
    ) -> FlowMatchFusionSchedulerOutput | tuple[torch.Tensor]:
        """One Euler step from ``timestep`` (a value of ``self.timesteps``) to the next grid time.

        As in diffusers' schedulers, the scheduler keeps a step index: the first step after
        :meth:`set_timesteps` looks ``timestep`` up on the grid, later steps advance the index (no lookup, no
        device sync). Call :meth:`set_timesteps` before every integration.
        """
        if self._step_index is None:
            self._step_index = self._index_of(timestep)
        index = self._step_index
        if index >= self.num_inference_steps:
            raise ValueError("All steps of the grid are done; call set_timesteps before integrating again.")
        dt = float(self._grid_steps[index])
        prev_sample = sample + dt * model_output.to(sample.dtype)
        self._step_index = index + 1
        if not return_dict:
            return (prev_sample,)
        return FlowMatchFusionSchedulerOutput(prev_sample=prev_sample)
