"""Compiled inference: the U-Net through ``torch.compile`` (inductor), its compiled code kept on disk.

Compiling the shipped U-Net takes minutes on 2 CPU cores the first time (about 3-5 min here); inductor's caches
in ``cache_dir`` let a later process load the result instead of compiling again. The caches are torch's own files
(written by the same user, partly pickled by torch): keep ``cache_dir`` private, never point it at files from
elsewhere. Shapes are compiled dynamic, so new image sizes do not each compile again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

COMPILE_CACHE_ENV = "FUSIONFM_COMPILE_CACHE"


@dataclass(frozen=True)
class CompiledUNet:
    """A compiled U-Net and the precision it serves (calls in other precisions run eager)."""

    module: torch.nn.Module
    dtype: torch.dtype


def default_compile_cache() -> Path:
    """``$FUSIONFM_COMPILE_CACHE``, else ``$XDG_CACHE_HOME/fusionfm/inductor`` (``~/.cache/...``)."""
    if os.environ.get(COMPILE_CACHE_ENV):
        return Path(os.environ[COMPILE_CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fusionfm" / "inductor"


def compile_unet(unet: torch.nn.Module, cache_dir: str | os.PathLike | None = None) -> torch.nn.Module:
    """``torch.compile(unet, dynamic=True)`` with inductor's on-disk cache in ``cache_dir``.

    The cache folder is process-wide (inductor reads ``TORCHINDUCTOR_CACHE_DIR`` at each lookup). Compilation
    itself happens at the first call of the returned module, which shares ``unet``'s weights.
    """
    folder = Path(cache_dir) if cache_dir is not None else default_compile_cache()
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder.resolve())
    return torch.compile(unet, dynamic=True)
