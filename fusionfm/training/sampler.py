"""Training batches: random crops of the current task's pairs plus replayed samples, with flow inputs.

Randomness comes from generators derived from (seed, process, step), so a resumed run draws exactly the
batches an uninterrupted run would have drawn.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..scheduler import FlowMatchFusionScheduler
from .continual import ReplayBuffer
from .datasets import LabelledPairs


def step_generator(seed: int, process: int, step: int, stream: int = 0) -> torch.Generator:
    """A generator determined by (seed, process, step, stream): resumed runs draw what they would have."""
    mixed = ((seed * 1_000_003 + process) * 1_000_000_007 + step) * 31 + stream
    return torch.Generator().manual_seed(mixed % (2**63 - 1))


class BatchSampler:
    """Draws batches of ``resolution`` x ``resolution`` crops (flipped left-right at random unless ``flip`` is
    off) from ``datasets`` (task -> pairs) and the replay buffer, with x0 and t from the noise scheduler, and
    with ``gain_shifts_for`` (the model's :meth:`fusionfm.unet.FusionUNet.gain_shifts_for`) the task variants'
    gain shifts, so that training starts each variant where inference does."""

    def __init__(self, datasets: dict[str, LabelledPairs], replay: ReplayBuffer,
                 scheduler: FlowMatchFusionScheduler, resolution: int, flip: bool = True,
                 gain_shifts_for: Callable[[Sequence[str]], torch.Tensor | None] | None = None) -> None:
        self.datasets, self.replay, self.scheduler = datasets, replay, scheduler
        self.resolution, self.flip, self.gain_shifts_for = resolution, flip, gain_shifts_for

    def draw(self, tasks: list[str], batch_size: int, generator: torch.Generator,
             replay_share: float = 0.0) -> tuple[dict[str, torch.Tensor], int]:
        """A batch whose fresh samples come from ``tasks`` (uniformly); returns it and the replayed count.

        The batch: ``image_a``, ``image_b``, ``target``, ``x0``: (B, 1, R, R) float; ``t``: (B,); ``task_id``: (B,);
        ``gain_shifts``: (B, L - 1) where the model starts task variants at their own gains.
        """
        fresh, replayed = self.replay.split_batch(batch_size, replay_share)
        picks = []
        for _ in range(fresh):
            task = tasks[int(torch.randint(len(tasks), (1,), generator=generator))]
            picks.append((task, int(torch.randint(len(self.datasets[task]), (1,), generator=generator))))
        picks += self.replay.sample(replayed, generator)
        crops = [self.datasets[task].random_crop(index, self.resolution, generator, self.flip)
                 for task, index in picks]
        batch = {key: torch.stack([crop[key] for crop in crops]) for key in ("image_a", "image_b", "target")}
        batch["task_id"] = torch.tensor([crop["task_id"] for crop in crops], dtype=torch.long)
        batch["has_target"] = torch.tensor([bool(crop.get("has_target", True)) for crop in crops])
        gain_shifts = self.gain_shifts_for([crop["task"] for crop in crops]) if self.gain_shifts_for else None
        if gain_shifts is not None:
            batch["gain_shifts"] = gain_shifts.cpu()
        batch["x0"] = self.scheduler.source_point(batch["image_a"], batch["image_b"], generator)
        batch["t"] = self.scheduler.sample_time(batch_size, generator)
        return batch, replayed
