"""The process group of a run under ``accelerate launch`` (one process otherwise), for splitting work.

On a CPU-only machine accelerate needs ``cpu=True`` to join the processes that ``accelerate launch --multi_gpu
--num_processes N`` starts (gloo); without it every process silently works alone on everything.
"""

from __future__ import annotations

import torch
from accelerate import PartialState


def process_state() -> PartialState:
    """accelerate's shared process state: ``num_processes``, ``process_index``, ``is_main_process``,
    ``split_between_processes`` and ``wait_for_everyone``."""
    return PartialState(cpu=not torch.cuda.is_available())
