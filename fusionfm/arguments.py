"""Checks of a pipeline call's arguments and of its result, with messages that say what is wrong and what to pass.

Shared by :class:`fusionfm.FusionFMPipeline` and its front ends (the folder CLI, the app), so that every way in reads
an argument the same way.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

DTYPE_NAMES = {
    "fp32": torch.float32, "float32": torch.float32,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16,
}
"""Names a call may give its ``compute_dtype`` (besides ``"auto"`` and torch dtypes)."""


def is_whole_number(value) -> bool:
    """A Python, numpy or 0-d torch integer (not a bool)."""
    if isinstance(value, torch.Tensor):
        return value.ndim == 0 and not (value.dtype.is_floating_point or value.dtype.is_complex
                                        or value.dtype == torch.bool)
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def whole_number(value, name: str, minimum: int, what: str = "") -> int:
    """``value`` as an int if it is a whole number (:func:`is_whole_number`) >= ``minimum``, else a ValueError that
    names it (``what``: what the number means, for the message)."""
    if not is_whole_number(value) or int(value) < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}{what}, got {value!r}.")
    return int(value)


def check_tile_size(tile_size, name: str = "tile_size") -> int:
    """0 (no tiling) or a whole number of pixels of at least 64, as an int."""
    if not is_whole_number(tile_size) or (int(tile_size) != 0 and int(tile_size) < 64):
        raise ValueError(f"{name} must be 0 (no tiling) or a whole number of pixels >= 64, got {tile_size!r}.")
    return int(tile_size)


def check_flag(value, name: str) -> bool:
    """A True/False option (Python or numpy bool) as a bool, else a ValueError naming it."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}.")
    return bool(value)


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bf16 arithmetic (AVX512-BF16 or AMX), where bf16 beats fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_compute_dtype(compute_dtype: torch.dtype | str, weights_dtype: torch.dtype,
                          device: torch.device) -> torch.dtype:
    """The dtype a network with ``weights_dtype`` weights runs in on ``device`` for a call's ``compute_dtype``:
    ``"auto"`` is bf16 where the device runs it natively (or the weights' own half precision), else fp32.

    Raises:
        ValueError: an unknown name, a non-float dtype, or fp16 on the CPU (its autocast overflows to NaN there).
    """
    if compute_dtype == "auto":
        if weights_dtype != torch.float32:
            dtype = weights_dtype
        elif device.type == "cpu":
            dtype = torch.bfloat16 if cpu_supports_bf16() else torch.float32
        elif device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            dtype = torch.float32
    elif isinstance(compute_dtype, torch.dtype):
        dtype = compute_dtype
    elif isinstance(compute_dtype, str) and compute_dtype.lower() in DTYPE_NAMES:
        dtype = DTYPE_NAMES[compute_dtype.lower()]
    else:
        raise ValueError(
            f"compute_dtype must be None, 'auto', 'fp32', 'bf16', 'fp16' or a torch dtype, got {compute_dtype!r}."
        )
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"compute_dtype {dtype} is not a floating-point type FusionFM can run in.")
    if dtype == torch.float16 and device.type == "cpu":
        raise ValueError("compute_dtype fp16 is not supported on the CPU (the result would be NaN); "
                         "use 'bf16' (fast on CPUs with native bf16) or 'fp32'.")
    return dtype


class NonFiniteResultError(RuntimeError):
    """The network produced NaN or infinite values (for example from half-precision weights on a CPU)."""


def check_finite(fused: torch.Tensor) -> torch.Tensor:
    """``fused`` if every value is finite, else a :class:`NonFiniteResultError` naming the likely causes."""
    if not bool(torch.isfinite(fused).all()):
        raise NonFiniteResultError(
            "The network returned NaN or infinite values, so no image is returned. Likely causes: weights moved to "
            "float16 on a CPU (use float32 or bf16) or weights that are damaged; reload the model with "
            "FusionFMPipeline.from_pretrained().")
    return fused
