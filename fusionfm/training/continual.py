"""Continual multi-task learning: elastic weight consolidation (EWC), a replay buffer, ACC and BWT.

Tasks are learned one after another. After each task:

- EWC keeps a diagonal Fisher F and an anchor copy of the weights theta*; later tasks pay
  ``(lambda / 2) * sum F (theta - theta*)^2``. Online accumulation: ``F <- decay * F + F_task`` and the
  anchor moves to the weights after the newest task (Schwarz et al. 2018; decay 1 sums the Fishers);
- the replay buffer keeps references (data set indices, never tensors) to a quota of the task's samples,
  and later batches mix a share of them in.

Both objects have ``state_dict`` / ``load_state_dict``: tensors for safetensors (EWC) or plain JSON
(replay), so training checkpoints never need pickle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch


def diagonal_fisher(
    model: torch.nn.Module,
    per_sample_loss: Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor],
    batches: Iterable[dict[str, torch.Tensor]],
) -> dict[str, torch.Tensor]:
    """Empirical diagonal Fisher: the mean over samples of each parameter's squared loss gradient.

    Args:
        model: the network; only parameters with ``requires_grad`` are included.
        per_sample_loss: ``(model, batch) -> (B,)`` loss of every sample of a batch.
        batches: dicts of tensors with the batch dimension first; every sample is differentiated on
            its own (batch of one), so the result does not depend on how samples are grouped.

    Returns:
        parameter name -> float32 tensor of the parameter's shape (zero when no batches are given).
    """
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    fisher = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in named}
    samples = 0
    for batch in batches:
        size = len(next(iter(batch.values())))
        for index in range(size):
            sample = {key: value[index : index + 1] for key, value in batch.items()}
            loss = per_sample_loss(model, sample).sum()
            # autograd.grad leaves .grad alone (and so never triggers DDP's gradient all-reduce).
            grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
            for (name, _), grad in zip(named, grads, strict=True):
                if grad is not None:
                    fisher[name] += grad.detach().float() ** 2
            samples += 1
    return {name: value / max(samples, 1) for name, value in fisher.items()}


class ElasticWeightConsolidation:
    """Online EWC over a model's named parameters.

    Args:
        strength: lambda in ``(lambda / 2) * sum F (theta - theta*)^2``; 0 turns the penalty off.
        decay: weight of the accumulated Fisher when a new task's Fisher is added (1 = plain sum).
    """

    def __init__(self, strength: float, decay: float = 1.0) -> None:
        if strength < 0:
            raise ValueError(f"EWC strength must be >= 0, got {strength}.")
        if not 0 <= decay <= 1:
            raise ValueError(f"EWC decay must be in [0, 1], got {decay}.")
        self.strength = strength
        self.decay = decay
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}
        self.tasks_consolidated = 0

    @property
    def active(self) -> bool:
        return self.strength > 0 and bool(self.anchor)

    def consolidate(self, model: torch.nn.Module, task_fisher: dict[str, torch.Tensor]) -> None:
        """Fold a finished task's Fisher into the running one and anchor at the current weights."""
        for name, value in task_fisher.items():
            value = value.detach().float().cpu()
            self.fisher[name] = self.decay * self.fisher[name] + value if name in self.fisher else value.clone()
        self.anchor = {name: p.detach().float().cpu().clone() for name, p in model.named_parameters()
                       if name in self.fisher}
        self.tasks_consolidated += 1

    def penalty(self, model: torch.nn.Module) -> torch.Tensor:
        """``(lambda / 2) * sum F (theta - theta*)^2`` as a scalar tensor on the model's device (0 if inactive)."""
        parameters = dict(model.named_parameters())
        device = next(iter(parameters.values())).device
        total = torch.zeros((), device=device)
        if not self.active:
            return total
        for name, fisher in self.fisher.items():
            theta = parameters[name]
            fisher, anchor = fisher.to(theta.device), self.anchor[name].to(theta.device)
            total = total + (fisher * (theta.float() - anchor) ** 2).sum()
        return 0.5 * self.strength * total

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat tensors (safetensors-ready): ``fisher.<name>``, ``anchor.<name>`` and the settings."""
        state = {f"fisher.{name}": value for name, value in self.fisher.items()}
        state |= {f"anchor.{name}": value for name, value in self.anchor.items()}
        state["strength"] = torch.tensor(self.strength, dtype=torch.float64)
        state["decay"] = torch.tensor(self.decay, dtype=torch.float64)
        state["tasks_consolidated"] = torch.tensor(self.tasks_consolidated, dtype=torch.int64)
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.strength = float(state["strength"])
        self.decay = float(state["decay"])
        self.tasks_consolidated = int(state["tasks_consolidated"])
        self.fisher = {key[len("fisher."):]: value.float() for key, value in state.items() if key.startswith("fisher.")}
        self.anchor = {key[len("anchor."):]: value.float() for key, value in state.items() if key.startswith("anchor.")}


class ReplayBuffer:
    """References to past tasks' training samples, a fixed quota per task.

    Args:
        size_per_task: how many samples of each finished task to keep (0 disables replay).
    """

    def __init__(self, size_per_task: int) -> None:
        if size_per_task < 0:
            raise ValueError(f"Replay size per task must be >= 0, got {size_per_task}.")
        self.size_per_task = size_per_task
        self.entries: dict[str, list[int]] = {}

    def __len__(self) -> int:
        return sum(len(indices) for indices in self.entries.values())

    @property
    def tasks(self) -> list[str]:
        return [task for task, indices in self.entries.items() if indices]

    def add_task(self, task: str, dataset_size: int, generator: torch.Generator) -> None:
        """Keep ``min(size_per_task, dataset_size)`` distinct indices of a finished task, drawn at random."""
        count = min(self.size_per_task, dataset_size)
        self.entries[task] = sorted(torch.randperm(dataset_size, generator=generator)[:count].tolist())

    def split_batch(self, batch_size: int, share: float) -> tuple[int, int]:
        """(current-task samples, replayed samples) for a batch: ``round(share * batch_size)`` replayed
        once the buffer holds anything, always leaving at least one current-task sample."""
        if not self.tasks or share <= 0:
            return batch_size, 0
        replayed = min(max(round(share * batch_size), 1), batch_size - 1)
        return batch_size - replayed, replayed

    def sample(self, count: int, generator: torch.Generator) -> list[tuple[str, int]]:
        """``count`` (task, index) references: a task uniformly among the stored ones, then an index of it."""
        tasks = self.tasks
        if count and not tasks:
            raise ValueError("The replay buffer is empty; add a finished task first.")
        picks = []
        for _ in range(count):
            task = tasks[int(torch.randint(len(tasks), (1,), generator=generator))]
            indices = self.entries[task]
            picks.append((task, indices[int(torch.randint(len(indices), (1,), generator=generator))]))
        return picks

    def state_dict(self) -> dict:
        return {"size_per_task": self.size_per_task, "entries": {task: list(v) for task, v in self.entries.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.size_per_task = int(state["size_per_task"])
        self.entries = {task: [int(i) for i in indices] for task, indices in state["entries"].items()}


def accuracy_and_backward_transfer(quality: list[list[float]]) -> tuple[float, float]:
    """ACC and BWT of a T x T matrix ``quality[i][j]`` (task j's quality after training task i).

    ACC = mean_j R[T-1][j]; BWT = mean over j < T-1 of (R[T-1][j] - R[j][j]) (negative = forgetting;
    0 for a single task).
    """
    size = len(quality)
    if size == 0 or any(len(row) != size for row in quality):
        raise ValueError(f"Need a square quality matrix, got rows of lengths {[len(row) for row in quality]}.")
    last = quality[-1]
    accuracy = sum(last) / size
    if size == 1:
        return accuracy, 0.0
    backward = sum(last[j] - quality[j][j] for j in range(size - 1)) / (size - 1)
    return accuracy, backward
