"""Compiled inference (fusionfm.compilation, FusionFMPipeline.compile_unet): same results as eager, cache on disk."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_pipeline

from fusionfm import FusionFMPipeline
from fusionfm.compilation import default_compile_cache


def fuse(pipe: FusionFMPipeline, pair, compute_dtype: str | None = None) -> np.ndarray:
    return pipe(pair[0], pair[1], task="MEF", compute_dtype=compute_dtype, output_type="np").images[0]


@pytest.mark.slow
def test_compiled_equals_eager_within_bf16_rounding_at_two_sizes(real_pair, compile_cache):
    pipe = make_pipeline()
    pairs = [[image.resize(size) for image in real_pair("MEF")] for size in ((640, 480), (600, 420))]
    eager = [fuse(pipe, pair, "bf16") for pair in pairs]
    exact = [fuse(pipe, pair, "fp32") for pair in pairs]
    # bf16's own rounding: how far eager bf16 is from fp32. The compiled code rounds at other places, so it can land
    # on the other side of the fp32 result (up to twice this from eager on a CPU without native bf16): it is held to
    # the same distance from fp32 as eager, and to eager on average.
    rounding = max(np.abs(result - reference).max() for result, reference in zip(eager, exact, strict=True))

    pipe.compile_unet("bf16", cache_dir=compile_cache)  # compiles now, on a 480x640 input
    assert pipe.compiled_dtype == torch.bfloat16
    assert any(compile_cache.rglob("*.py")), "inductor wrote no code to the cache folder"
    for pair, expected, reference in zip(pairs, eager, exact, strict=True):  # the second size: the same dynamic code
        compiled = fuse(pipe, pair, "bf16")
        from_fp32, from_eager = np.abs(compiled - reference), np.abs(compiled - expected)
        assert from_fp32.max() <= 2 * rounding and from_eager.mean() <= 2e-3, (from_fp32.max(), rounding)

    pipe.disable_compile()
    assert pipe.compiled_dtype is None
    np.testing.assert_array_equal(fuse(pipe, pairs[0], "bf16"), eager[0])


def test_other_precisions_stay_eager(real_pair, tmp_path):
    pipe = make_pipeline()
    pair = [image.resize((96, 72)) for image in real_pair("MEF")]
    eager = fuse(pipe, pair, "fp32")
    pipe.compile_unet("bf16", cache_dir=tmp_path, warm_up_size=None)  # would compile at the first bf16 call
    np.testing.assert_array_equal(fuse(pipe, pair, "fp32"), eager)  # fp32 calls never reach the compiled module
    assert pipe.compiled_dtype == torch.bfloat16
    assert not any(tmp_path.rglob("*.py"))


def test_compile_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FUSIONFM_COMPILE_CACHE", str(tmp_path / "mine"))
    assert default_compile_cache() == tmp_path / "mine"
    monkeypatch.delenv("FUSIONFM_COMPILE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_compile_cache() == tmp_path / "xdg" / "fusionfm" / "inductor"
