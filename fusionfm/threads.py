"""How many torch threads one fusion should use when several run on one machine."""

from __future__ import annotations

import os


def default_threads(concurrent: int) -> int:
    """Torch threads for one of ``concurrent`` fusions running at once on this machine: the CPU count shared between
    them (the app's and the folder CLI's rule). More threads than free cores make torch's workers wait on each
    other, and a call becomes many times slower."""
    return max(1, (os.cpu_count() or 1) // max(concurrent, 1))
