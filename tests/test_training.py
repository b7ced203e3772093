"""training/train.py end to end on real pseudo-labels: one process, two processes, checkpoints and resume."""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import PIL.Image
import pytest
import torch
from conftest import DATA, REPO_ROOT, accelerate_launcher, free_port, kill_process_tree, make_pipeline
from safetensors.torch import load_file

from fusionfm import FusionFMPipeline
from fusionfm.pseudolabel import main as build_labels
from fusionfm.training.checkpoints import checkpoint_is_complete

pytestmark = pytest.mark.slow  # runs training/train.py in one and two processes

SCRIPT = REPO_ROOT / "training" / "train.py"
STEPS_PER_TASK = 4


@pytest.fixture(scope="module")
def labels(tmp_path_factory) -> dict[str, Path]:
    """Real MRI-PET labels (4 training pairs) and synthetic multi-focus labels (3 pairs), stage 1 only."""
    root = tmp_path_factory.mktemp("labels")
    common = ["--data", str(DATA), "--split", "train", "--no-refine", "--no-progress"]
    assert build_labels([*common, "--task", "MIF-PET", "--limit", "4", "--out", str(root / "MIF")]) == 0
    assert build_labels([*common, "--task", "MFF", "--synthetic", "--limit", "3", "--out", str(root / "MFF")]) == 0
    return {"MIF": root / "MIF", "MFF": root / "MFF"}


def _arguments(labels: dict[str, Path], output_dir: Path, *extra: str) -> list[str]:
    return [
        "--data_root", str(DATA), "--labels", *(f"{task}={folder}" for task, folder in labels.items()),
        "--unet_preset", "tiny", "--steps_per_task", str(STEPS_PER_TASK), "--train_batch_size", "2",
        "--resolution", "32", "--lr_warmup_steps", "2", "--checkpointing_steps", "2",
        "--ewc_lambda", "100", "--ewc_fisher_batches", "1", "--replay_per_task", "2", "--replay_share", "0.5",
        "--eval_pairs", "1", "--eval_resolution", "64", "--logging_steps", "1", "--no_progress",
        "--output_dir", str(output_dir), *extra,
    ]


def _run(arguments: list[str], launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    command = [*(launcher or [sys.executable]), str(SCRIPT), *arguments]
    # The script must import this checkout's fusionfm, whatever checkout the installed package points at.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=REPO_ROOT, env=env)


def _log(output_dir: Path) -> list[dict]:
    with (output_dir / "logs" / "train_log.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")


@pytest.fixture(scope="module")
def one_process_run(labels, tmp_path_factory) -> Path:
    output_dir = tmp_path_factory.mktemp("run") / "out"
    result = _run(_arguments(labels, output_dir, "--mixed_precision", "no", "--checkpoints_total_limit", "2"))
    assert result.returncode == 0, result.stderr[-3000:]
    return output_dir


def test_one_process_run_writes_a_loadable_pipeline(one_process_run, real_pair):
    pipe = FusionFMPipeline.from_pretrained(one_process_run)
    pipe.set_progress_bar_config(disable=True)
    mri, pet = real_pair("MIF-PET")
    fused = pipe(mri, pet, task="MIF-PET").images[0]
    assert fused.size == mri.size and fused.mode == "RGB"
    for stage in ("after-1-MIF", "after-2-MFF"):
        assert (one_process_run / stage / "model_index.json").is_file()
        assert not list((one_process_run / stage).rglob("*.bin"))  # safetensors only
    summary = json.loads((one_process_run / "training_summary.json").read_text())
    assert summary["world_size"] == 1 and summary["steps"] == 2 * STEPS_PER_TASK


def test_log_follows_the_task_order_and_the_replay_share(one_process_run):
    rows = _log(one_process_run)
    assert [int(row["step"]) for row in rows] == list(range(1, 2 * STEPS_PER_TASK + 1))
    assert [row["task"] for row in rows] == ["MIF"] * STEPS_PER_TASK + ["MFF"] * STEPS_PER_TASK
    # Replay and EWC start with the second task: one of the batch of two is replayed.
    assert [int(row["replayed"]) for row in rows] == [0] * STEPS_PER_TASK + [1] * STEPS_PER_TASK
    penalties = [float(row["ewc_penalty"]) for row in rows]
    assert all(p == 0 for p in penalties[:STEPS_PER_TASK + 1]) and penalties[-1] > 0


def test_continual_matrix_and_model_card(one_process_run):
    with (one_process_run / "continual.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["after", "MIF", "MFF"]
    assert [row[0] for row in rows[1:]] == ["MIF", "MFF", "ACC", "BWT"]
    quality = [[float(value) for value in row[1:]] for row in rows[1:3]]
    assert all(0 < value < 3 for row in quality for value in row)
    # Every value is rounded to 4 decimals, so recomputing from them can be off by up to 1.5e-4.
    assert float(rows[3][1]) == pytest.approx(sum(quality[1]) / 2, abs=2e-4)
    assert float(rows[4][1]) == pytest.approx(quality[1][0] - quality[0][0], abs=2e-4)
    card = (one_process_run / "model_card.md").read_text()
    assert card.startswith("---\n") and "pipeline_tag: image-to-image" in card
    assert "| `ewc_lambda` | `100.0` |" in card and "| MFF | " in card and "BWT" in card
    assert f'from_pretrained("{one_process_run}")' in card


def test_old_checkpoints_are_pruned_to_the_limit(one_process_run):
    assert sorted(p.name for p in one_process_run.glob("checkpoint-*")) == ["checkpoint-6", "checkpoint-8"]
    assert not list(one_process_run.glob(".checkpoint-*"))


def test_resume_continues_at_the_right_step_and_task(one_process_run, labels, tmp_path):
    output_dir = tmp_path / "out"
    shutil.copytree(one_process_run, output_dir)
    for item in ("unet", "scheduler", "model_index.json", "training_summary.json"):
        path = output_dir / item
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    # checkpoint-8 was cut short while being written: a truncated file. Resume must skip it.
    model_file = output_dir / "checkpoint-8" / "model.safetensors"
    model_file.write_bytes(model_file.read_bytes()[:100])

    result = _run(_arguments(labels, output_dir, "--mixed_precision", "no", "--checkpoints_total_limit", "2",
                             "--resume_from_checkpoint", "latest"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "checkpoint-8 is incomplete" in result.stderr
    summary = json.loads((output_dir / "training_summary.json").read_text())
    assert summary["resumed_from"] == {"checkpoint": "checkpoint-6", "step": 6}
    rows = _log(output_dir)
    assert [int(row["step"]) for row in rows] == list(range(1, 2 * STEPS_PER_TASK + 1))  # no step twice
    assert rows[6]["task"] == "MFF" and rows[6]["replayed"] == "1" and float(rows[6]["ewc_penalty"]) > 0
    # Same batches, optimizer state, LR schedule, EWC anchor and replay buffer: the same weights, bit for bit.
    resumed, uninterrupted = _weights(output_dir), _weights(one_process_run)
    assert all(torch.equal(resumed[name], uninterrupted[name]) for name in uninterrupted)
    assert checkpoint_is_complete(output_dir / "checkpoint-8")  # rewritten whole


def test_two_processes_are_distributed_and_end_with_identical_weights(labels, tmp_path):
    output_dir = tmp_path / "out"
    accelerate = Path(sys.executable).with_name("accelerate")  # the CLI installed beside this interpreter
    launcher = [str(accelerate) if accelerate.is_file() else "accelerate", "launch", "--multi_gpu",
                "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                "--main_process_port", str(free_port())]
    result = _run(_arguments(labels, output_dir, "--mixed_precision", "bf16", "--eval_pairs", "0"), launcher)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((output_dir / "training_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["distributed_type"] == "DistributedType.MULTI_CPU"
    first, second = summary["weights_sha256_per_process"]
    assert first == second  # gradients were all-reduced every step
    losses = summary["first_step_loss_per_process"]
    assert losses[0] != losses[1]  # each process drew its own batch
    pipe = FusionFMPipeline.from_pretrained(output_dir)
    assert pipe.unet.config.block_out_channels == [8, 16]


def test_clear_errors_for_bad_arguments(labels, tmp_path):
    result = _run(["--labels", f"MIF={labels['MIF']}", "--tasks", "MIF", "MFF", "--output_dir", str(tmp_path)])
    assert result.returncode == 2 and "no --labels folder for MFF" in result.stderr
    result = _run(["--labels", f"IVF={tmp_path / 'nowhere'}", "--data_root", str(DATA), "--output_dir",
                   str(tmp_path)])
    assert result.returncode != 0 and "No labels.csv" in result.stderr and "Traceback" not in result.stderr
    result = _run(["--labels", "MIF", "--output_dir", str(tmp_path)])
    assert result.returncode == 2 and "TASK=DIR" in result.stderr


def _start(arguments: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([*accelerate_launcher(2), str(SCRIPT), *arguments], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _kill_when(process: subprocess.Popen, ready, timeout: float = 300) -> bool:
    """SIGKILL the launcher and its workers as soon as ``ready()``; False if the run ended first."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        if ready():
            kill_process_tree(process)
            return True
        time.sleep(0.005)
    process.wait(timeout=60)
    return False


def test_a_two_process_run_killed_again_and_again_resumes_to_the_same_weights(labels, tmp_path):
    """SIGKILL of all processes, three times (once in the middle of a checkpoint write, twice at random moments
    after a checkpoint), then resume: the final weights equal an uninterrupted two-process run's, bit for bit."""
    arguments = ["--mixed_precision", "no", "--eval_pairs", "0", "--checkpoints_total_limit", "2"]
    reference = tmp_path / "reference"
    result = _run(_arguments(labels, reference, *arguments), accelerate_launcher(2))
    assert result.returncode == 0, result.stderr[-3000:]

    output_dir = tmp_path / "killed"
    resume = [*_arguments(labels, output_dir, *arguments), "--resume_from_checkpoint", "latest"]
    rng = random.Random(0)
    kills = [lambda: any(output_dir.glob(".checkpoint-*.partial")),  # mid-write
             lambda: (output_dir / "checkpoint-4").is_dir(), lambda: (output_dir / "checkpoint-6").is_dir()]
    killed = 0
    for ready in kills:
        delay = rng.uniform(0, 0.5)
        started = [None]

        def ready_after_delay(ready=ready, delay=delay, started=started):
            if started[0] is None and ready():
                started[0] = time.monotonic()
            return started[0] is not None and time.monotonic() - started[0] >= delay

        killed += _kill_when(_start(resume), ready if killed == 0 else ready_after_delay)
    assert killed >= 2  # a fast machine may finish before the last kill
    result = _run(resume, accelerate_launcher(2))
    assert result.returncode == 0, result.stderr[-3000:]
    final, uninterrupted = _weights(output_dir), _weights(reference)
    assert all(torch.equal(final[name], uninterrupted[name]) for name in uninterrupted)
    assert not list(output_dir.glob(".checkpoint-*"))  # no staging or pruning leftovers


def test_relabel_folder_replaces_the_chosen_labels_copies_the_rest_and_resumes(labels, tmp_path):
    from fusionfm.color import luminance
    from fusionfm.image_processor import FusionImageProcessor
    from fusionfm.pyramid import activity_fusion
    from fusionfm.training.datasets import LabelledPairs, relabel_folder

    processor = FusionImageProcessor()
    first = LabelledPairs(labels["MFF"]).pairs[0].stem

    def replace_first(pair):
        if pair.stem != first:
            return None
        y_a, y_b = (luminance(processor.load(path)[None]) for path in (pair.path_a, pair.path_b))
        return activity_fusion(y_a, y_b, torch.tensor([16.0, 16.0, 0.0]))[0]

    out = tmp_path / "relabelled"
    assert relabel_folder(labels["MFF"], out, None, replace_first) == (3, 1)
    copy = LabelledPairs(out)  # synthetic sources and labels.csv came along: it trains like the original
    for original, relabelled in zip(LabelledPairs(labels["MFF"]).pairs, copy.pairs, strict=True):
        same = original.path_label.read_bytes() == relabelled.path_label.read_bytes()
        assert same == (original.stem != first)
    assert relabel_folder(labels["MFF"], out, None, replace_first) == (3, 0)  # resumed: nothing left to write


def test_fine_tuning_on_a_folder_of_ones_own_pairs_changes_that_task_alone(tmp_path):
    """The README's recipe on three small real pairs in the folder CLI's layout: --init a model, --pairs IVF=DIR,
    --freeze_shared; the output loads and fuses, its infrared-visible fusions move and its other tasks stay
    exactly as they were."""
    pairs = tmp_path / "my_pairs"
    pairs.mkdir()
    stems = sorted(path.stem for path in (DATA / "IVF" / "TNO" / "train" / "ir").iterdir())[:3]
    for stem in stems:
        for modality in ("ir", "vi"):
            source = next((DATA / "IVF" / "TNO" / "train" / modality).glob(f"{stem}.*"))
            PIL.Image.open(source).convert("L").crop((0, 0, 96, 96)).save(pairs / f"{stem}_{modality}.png")
    init = tmp_path / "init"
    make_pipeline().save_pretrained(init)
    output_dir = tmp_path / "tuned"
    result = _run(["--init", str(init), "--pairs", f"IVF={pairs}", "--tasks", "IVF", "--freeze_shared",
                   "--steps_per_task", "3", "--train_batch_size", "2", "--resolution", "64", "--lr_warmup_steps", "1",
                   "--learning_rate", "0.05", "--eval_pairs", "0", "--no_progress", "--output_dir", str(output_dir)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Training pairs: IVF 3" in result.stderr
    before, after = FusionFMPipeline.from_pretrained(init), FusionFMPipeline.from_pretrained(output_dir)
    a, b = (PIL.Image.open(pairs / f"{stems[0]}_{modality}.png") for modality in ("ir", "vi"))
    fused = {name: [pipe(a, b, task=task, output_type="pt", compute_dtype="fp32").images for task in
                    ("IVF", "MIF", "MEF", "MFF")] for name, pipe in (("before", before), ("after", after))}
    assert (fused["after"][0] - fused["before"][0]).abs().max() > 1e-4
    for task in (1, 2, 3):
        torch.testing.assert_close(fused["after"][task], fused["before"][task], atol=0, rtol=0)
