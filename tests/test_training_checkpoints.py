"""fusionfm.training.checkpoints: round trip, torn checkpoints ignored, pruning, resume resolution."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from diffusers.optimization import get_scheduler

from fusionfm import build_unet
from fusionfm.training.checkpoints import (
    TrainingState,
    checkpoint_is_complete,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    resolve_resume,
    save_checkpoint,
    weights_fingerprint,
)
from fusionfm.training.continual import ElasticWeightConsolidation, ReplayBuffer


def _training_objects(seed: int):
    torch.manual_seed(seed)
    model = build_unet("tiny")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    lr_scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=2, num_training_steps=20)
    return model, optimizer, lr_scheduler, ElasticWeightConsolidation(10.0), ReplayBuffer(2)


def _one_step(model, optimizer, lr_scheduler) -> None:
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    loss = model(x, x, x, torch.full((2,), 0.5), torch.zeros(2, dtype=torch.long)).square().mean()
    loss.backward()
    optimizer.step()
    lr_scheduler.step()
    optimizer.zero_grad()


@pytest.fixture()
def checkpoint(tmp_path):
    model, optimizer, lr_scheduler, ewc, replay = _training_objects(0)
    _one_step(model, optimizer, lr_scheduler)
    ewc.consolidate(model, {name: torch.ones_like(p) for name, p in model.named_parameters()})
    replay.add_task("IVF", 5, torch.Generator().manual_seed(0))
    state = TrainingState(step=1, quality=[[1.1, 0.9]], stage_names=["IVF"])
    folder = tmp_path / "checkpoint-1"
    save_checkpoint(folder, model, optimizer, lr_scheduler, ewc, replay, state, {"seed": 0})
    return folder, model, optimizer, lr_scheduler, ewc, replay


def test_round_trip_restores_everything(checkpoint):
    folder, model, optimizer, lr_scheduler, ewc, replay = checkpoint
    assert checkpoint_is_complete(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["ewc.safetensors", "model.safetensors",
                                                        "optimizer.safetensors", "state.json"]
    restored = _training_objects(seed=1)  # other initial weights
    state = load_checkpoint(folder, *restored)
    assert state == TrainingState(step=1, quality=[[1.1, 0.9]], stage_names=["IVF"])
    assert weights_fingerprint(restored[0]) == weights_fingerprint(model)
    assert restored[2].state_dict() == lr_scheduler.state_dict()
    assert restored[4].state_dict() == replay.state_dict()
    # One more step from the restored state gives the same weights as one more step from the original.
    _one_step(model, optimizer, lr_scheduler)
    _one_step(*restored[:3])
    assert weights_fingerprint(restored[0]) == weights_fingerprint(model)
    assert float(restored[3].penalty(restored[0]).detach()) == pytest.approx(float(ewc.penalty(model).detach()))


def test_an_interrupted_checkpoint_is_not_taken_as_valid(checkpoint, tmp_path):
    source = checkpoint[0]
    cases = {
        "checkpoint-10": lambda folder: (folder / "state.json").unlink(),  # killed before state.json
        "checkpoint-12": lambda folder: (folder / "state.json").write_text('{"files": {"model.saf'),  # torn JSON
        "checkpoint-14": lambda folder: (folder / "ewc.safetensors").unlink(),  # a listed file missing
        "checkpoint-16": lambda folder: (folder / "model.safetensors").write_bytes(b"\0" * 10),  # truncated
    }
    for name, damage in cases.items():
        shutil.copytree(source, tmp_path / name)
        damage(tmp_path / name)
        assert not checkpoint_is_complete(tmp_path / name)
    shutil.copytree(source, tmp_path / ".checkpoint-18.partial")  # the hidden folder a writer renames at the end
    shutil.copytree(source, tmp_path / "checkpoint-4")
    assert list_checkpoints(tmp_path) == [source, tmp_path / "checkpoint-4"]
    assert resolve_resume(tmp_path, "latest") == tmp_path / "checkpoint-4"
    assert resolve_resume(tmp_path / "empty", "latest") is None
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        resolve_resume(tmp_path, str(tmp_path / "checkpoint-12"))
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        load_checkpoint(tmp_path / "checkpoint-14", *_training_objects(0))


def test_pruning_keeps_the_newest(checkpoint, tmp_path):
    for step in (3, 5, 20):
        shutil.copytree(checkpoint[0], tmp_path / f"checkpoint-{step}")
    prune_checkpoints(tmp_path, None)
    assert len(list_checkpoints(tmp_path)) == 4
    prune_checkpoints(tmp_path, 2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-5", "checkpoint-20"]


def test_saving_the_same_step_again_replaces_it(checkpoint):
    folder, model, optimizer, lr_scheduler, ewc, replay = checkpoint
    _one_step(model, optimizer, lr_scheduler)
    save_checkpoint(folder, model, optimizer, lr_scheduler, ewc, replay, TrainingState(step=2), {})
    restored = _training_objects(seed=1)
    assert load_checkpoint(folder, *restored).step == 2
    assert weights_fingerprint(restored[0]) == weights_fingerprint(model)
    assert not list(folder.parent.glob(".checkpoint-1.*"))


def test_a_changed_byte_of_the_same_size_is_caught_by_the_hash(checkpoint):
    folder = checkpoint[0]
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF  # one flipped byte in the last weight: same size, other content
    (folder / "model.safetensors").write_bytes(bytes(data))
    assert not checkpoint_is_complete(folder)
    with pytest.raises(ValueError, match="changed since they were written"):
        load_checkpoint(folder, *_training_objects(0))


def test_checkpoints_of_older_runs_with_sizes_only_still_load(checkpoint):
    folder = checkpoint[0]
    meta = json.loads((folder / "state.json").read_text())
    meta["files"] = {name: record["size"] for name, record in meta["files"].items()}
    (folder / "state.json").write_text(json.dumps(meta))
    assert checkpoint_is_complete(folder)
    assert load_checkpoint(folder, *_training_objects(1)).step == 1


def test_what_a_killed_prune_left_is_removed_by_the_next_prune(checkpoint, tmp_path):
    for step in (3, 5, 20):
        shutil.copytree(checkpoint[0], tmp_path / f"checkpoint-{step}")
    (tmp_path / "checkpoint-3" / "model.safetensors").unlink()  # rmtree killed half-way (old pruning)
    shutil.copytree(checkpoint[0], tmp_path / ".checkpoint-2.pruning")  # killed after the rename
    shutil.copytree(checkpoint[0], tmp_path / ".checkpoint-30.partial")  # a write in progress: left alone
    prune_checkpoints(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".checkpoint-30.partial", "checkpoint-20", "checkpoint-5"]


def test_a_checkpoint_that_does_not_fit_names_the_file(checkpoint):
    folder = checkpoint[0]
    torch.manual_seed(0)
    other = build_unet("tiny", block_out_channels=(8, 8))
    optimizer = torch.optim.AdamW(other.parameters(), lr=1e-3)
    lr_scheduler = get_scheduler("constant", optimizer)
    with pytest.raises(ValueError, match=r"model\.safetensors does not fit this model"):
        load_checkpoint(folder, other, optimizer, lr_scheduler, ElasticWeightConsolidation(1.0), ReplayBuffer(2))
