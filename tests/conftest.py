"""Shared fixtures: real image pairs from ../shared/data and a small, fixed pipeline."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from torch.nn.functional import max_pool2d

from fusionfm import (
    FlowMatchFusionScheduler,
    FusionFMPipeline,
    FusionImageProcessor,
    build_unet,
    get_task,
    load_image,
)
from fusionfm.color import luminance
from fusionfm.finishing import BLACK_LEVEL, LIT_SOURCE_RADIUS

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FUSIONFM_SHARED", REPO_ROOT.parent / "shared")).resolve()
DATA = SHARED / "data"

# One real test pair per task (task, dataset, stem): gray+colour IVF, gray+gray IVF stored as RGB,
# colour PET, gray CT stored as RGB, colour MEF and MFF pairs.
PAIRS = {
    "IVF": ("IVF", "RoadScene", "FLIR_06995"),
    "IVF-gray": ("IVF", "TNO", "07"),
    "MIF-PET": ("MIF", "Harvard_MRI_PET", "11"),
    "MIF-CT": ("MIF", "Harvard_MRI_CT", "11"),
    "MEF": ("MEF", "MEFB", "garage"),
    "MFF": ("MFF", "MFIFB", "lytro_01"),
}


def _manifest() -> dict[tuple[str, str, str], dict[str, str]]:
    manifest = DATA / "manifest.csv"
    if not manifest.is_file():
        raise RuntimeError(
            f"The shared data is missing ({manifest}). Tests read real images from ../shared/data; "
            "set FUSIONFM_SHARED to the folder holding data/ and golden/."
        )
    with manifest.open(newline="") as handle:
        return {(row["task"], row["dataset"], row["stem"]): row for row in csv.DictReader(handle)}


@pytest.fixture(scope="session")
def real_pair():
    """Load a real pair by key of :data:`PAIRS`: returns (PIL image a, PIL image b)."""
    rows = _manifest()

    def load(key: str):
        row = rows[PAIRS[key]]
        return load_image(DATA / row["path_a"]), load_image(DATA / row["path_b"])

    return load


def make_pipeline(coupling: str = "mean", seed: int = 0, open_gates: bool = True) -> FusionFMPipeline:
    """A pipeline with the tiny U-Net (the shipped model's kind), deterministically initialised, progress bars off;
    ``open_gates``: the network's corrections on, as after training (closed: every task is its start and the
    U-Net is skipped)."""
    torch.manual_seed(seed)
    unet = build_unet("tiny").eval()
    if open_gates:
        with torch.no_grad():
            unet.task_gate.fill_(1.0)
    pipe = FusionFMPipeline(unet=unet, scheduler=FlowMatchFusionScheduler(coupling=coupling))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture()
def tiny_pipe() -> FusionFMPipeline:
    return make_pipeline()


@pytest.fixture(scope="session")
def compile_cache(tmp_path_factory) -> Path:
    """One inductor cache for the session: the tests that compile the same small U-Net compile it once."""
    return tmp_path_factory.mktemp("inductor")


def load_app_module():
    """app.py as a module (it is a script at the top level, not part of the package)."""
    if "fusionfm_app" not in sys.modules:
        spec = importlib.util.spec_from_file_location("fusionfm_app", REPO_ROOT / "app.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return sys.modules["fusionfm_app"]


def fusion_choice(y_a: torch.Tensor, y_b: torch.Tensor, task: str) -> torch.Tensor:
    """Where a fusion of 8-bit luminances (any shape ending in H, W; grey levels) has a choice to make: the inputs
    differ by more than 10 grey levels, and, for scans (black is no signal), neither is black within the
    lit-source rule's box, where the fusion shows the other scan by design (fusionfm.finishing). Bool, same shape."""
    y_a, y_b = torch.as_tensor(y_a, dtype=torch.float64), torch.as_tensor(y_b, dtype=torch.float64)
    choice = (y_a - y_b).abs() > 10
    if get_task(task).black_is_empty:
        black = ((y_a <= BLACK_LEVEL * 255) | (y_b <= BLACK_LEVEL * 255)).double()
        near_black = max_pool2d(black.reshape(1, 1, *black.shape[-2:]), 2 * LIT_SOURCE_RADIUS + 1, 1,
                                LIT_SOURCE_RADIUS).reshape(choice.shape)
        choice &= near_black == 0
    return choice


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve_app(max_side: int = 2048, max_upload_pixels: int = 25_000_000,
              max_file_size: int | None = None) -> Iterator[str]:
    """The app on the bundled model (or $FUSIONFM_MODEL), served in this process on a free port: yields its URL."""
    app = load_app_module()
    fusion_app = app.FusionApp(FusionFMPipeline.from_pretrained(), max_side=max_side,
                               max_upload_pixels=max_upload_pixels)
    demo = app.build_demo(fusion_app, concurrency=2)
    port = free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True,
                max_file_size=max_file_size, css=app.APP_CSS)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


def kill_process_tree(process) -> None:
    """SIGKILL a launched process and every descendant: ``accelerate launch`` starts its workers in sessions of
    their own, so killing the launcher's process group leaves them running."""
    import psutil

    try:
        root = psutil.Process(process.pid)
        family = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    process.wait()
    psutil.wait_procs(family, timeout=30)


def accelerate_launcher(processes: int) -> list[str]:
    """``accelerate launch`` with ``processes`` real CPU processes (gloo) on this machine, on a free port."""
    accelerate = Path(sys.executable).with_name("accelerate")
    return [str(accelerate) if accelerate.is_file() else "accelerate", "launch", "--multi_gpu", "--num_processes",
            str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(free_port())]


@pytest.fixture(scope="module")
def ivf_crops(real_pair) -> tuple[torch.Tensor, torch.Tensor]:
    """The luminances (1, 1, 96, 120) of the top-left crop of a real infrared-visible pair (RoadScene)."""
    processor = FusionImageProcessor()
    a, b = (luminance(processor.to_tensor_list(image)[0][None]) for image in real_pair("IVF"))
    return a[..., :96, :120], b[..., :96, :120]


@dataclasses.dataclass
class KilledAndResumed:
    """What :func:`run_one_then_two_killed_and_resumed` saw: the outputs present when the two-process run was killed
    (name -> mtime in ns) and the resumed run."""

    done_before: dict[str, int]
    resumed: subprocess.CompletedProcess


def run_one_then_two_killed_and_resumed(arguments: list[str], one: Path, two: Path, outputs: str,
                                        wait_for: int = 2) -> KilledAndResumed:
    """``python ARGUMENTS --out ONE``, then the same under ``accelerate launch`` with two processes into TWO, killed
    (launcher and workers) as soon as ``wait_for`` files match the glob ``outputs`` under TWO, then run again there
    to the end. One thread per process; this checkout's fusionfm."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, *arguments, "--out", str(one)], env=env, check=True, capture_output=True,
                   timeout=600)
    process = subprocess.Popen([*accelerate_launcher(2), *arguments, "--out", str(two)], env=env,
                               start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(list(two.glob(outputs))) < wait_for:
        time.sleep(0.02)
    kill_process_tree(process)
    done = {path.name: path.stat().st_mtime_ns for path in two.glob(outputs)}
    resumed = subprocess.run([*accelerate_launcher(2), *arguments, "--out", str(two)], env=env, capture_output=True,
                             text=True, timeout=600)
    return KilledAndResumed(done, resumed)


def pil_to_tensor(image: PIL.Image.Image) -> torch.Tensor:
    """(1, C, H, W) float in [0, 1] from an 8-bit L or RGB PIL image."""
    array = np.asarray(image, dtype=np.float32) / 255.0
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array).permute(2, 0, 1)[None]


@pytest.fixture(scope="module")
def exposure_bracket():
    """The first three frames of a real Waterloo exposure sequence, darkest first, downscaled for speed."""
    paths = sorted((DATA / "MEF" / "Waterloo" / "sequences" / "Balloons").glob("*.png"))[:3]
    return [PIL.Image.open(path).convert("RGB").reduce(4) for path in paths]


def trained_like_default_pipe() -> FusionFMPipeline:
    """A small pipeline of the default preset with the network's corrections on and its gains off their start, as
    after training."""
    pipe = make_pipeline()
    pipe.unet = build_unet("default", block_out_channels=(8, 16, 16, 16), norm_num_groups=4).eval()
    with torch.no_grad():
        pipe.unet.task_gate.fill_(0.5)
        pipe.unet.gain_offset.add_(0.05)
    return pipe
