"""Loading from the Hub (loopback server running the real download code), the offline cache, and pushing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, make_pipeline
from hub_server import COMMIT, HubServer

from fusionfm.hub import push_folder_to_hub, resolve_pipeline_path, upload_operations

REPO_ID = "fusionfm-test/tiny"

# Runs in a child process: HF_* variables are read when huggingface_hub is imported.
LOAD_AND_FUSE = """
import sys, numpy as np, torch
from fusionfm import FusionFMPipeline
pipe = FusionFMPipeline.from_pretrained(sys.argv[1])
pipe.set_progress_bar_config(disable=True)
a = np.load(sys.argv[2])
out = pipe(a["a"], a["b"], task="IVF", output_type="np", compute_dtype="fp32").images
np.save(sys.argv[3], out)
"""


def _run_child(env_overrides: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(env_overrides)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", LOAD_AND_FUSE, *args], env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture()
def saved_model(tmp_path, real_pair):
    pipe = make_pipeline()
    folder = tmp_path / "model"
    pipe.save_pretrained(folder)
    ir, vi = real_pair("IVF")
    inputs = tmp_path / "pair.npz"
    np.savez(inputs, a=np.array(ir), b=np.array(vi))
    expected = pipe(ir, vi, task="IVF", output_type="np", compute_dtype="fp32").images
    return folder, inputs, expected


@pytest.mark.slow
def test_hub_download_then_offline_cache(tmp_path, saved_model):
    folder, inputs, expected = saved_model
    hf_home = tmp_path / "hf_home"
    with HubServer(REPO_ID, folder) as hub:
        online = _run_child({"HF_ENDPOINT": hub.url, "HF_HOME": str(hf_home), "HF_HUB_DISABLE_TELEMETRY": "1"},
                            REPO_ID, str(inputs), str(tmp_path / "online.npy"))
        assert online.returncode == 0, online.stderr[-3000:]
        requests = list(hub.requests)
    # The real download path ran: repo info, tree listing, then the files themselves.
    assert any(r.startswith(f"GET /api/models/{REPO_ID}/revision/") for r in requests)
    assert f"GET /{REPO_ID}/resolve/{COMMIT}/unet/diffusion_pytorch_model.safetensors" in requests
    # from_pretrained gives the weights a channels-last layout on bf16 CPUs; fp32 kernels then round differently
    # (up to 1.4e-5 measured), so the loaded model agrees to 1e-4, not bit for bit.
    np.testing.assert_allclose(np.load(tmp_path / "online.npy"), expected, atol=1e-4)
    snapshots = list((hf_home / "hub").glob("models--fusionfm-test--tiny/snapshots/*/unet/*.safetensors"))
    assert len(snapshots) == 1

    # Server gone, offline mode: the cache alone serves the same model, fast.
    offline = _run_child({"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"},
                         REPO_ID, str(inputs), str(tmp_path / "offline.npy"))
    assert offline.returncode == 0, offline.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "offline.npy"), expected, atol=1e-4)


@pytest.mark.slow
def test_unknown_repo_offline_fails_with_a_clear_error(tmp_path, saved_model):
    _, inputs, _ = saved_model
    result = _run_child({"HF_HOME": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "1"},
                        "nobody/nothing", str(inputs), str(tmp_path / "out.npy"))
    assert result.returncode != 0
    assert "Could not fetch the FusionFM pipeline 'nobody/nothing' from the Hub" in result.stderr


def test_local_paths_that_are_not_pipelines(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no model_index.json"):
        resolve_pipeline_path(tmp_path)
    with pytest.raises(FileNotFoundError, match="No pipeline folder at"):
        resolve_pipeline_path(tmp_path / "missing" / "model")


class RecordingApi:
    """Stands in for HfApi: records what a push would send."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

    def create_commit(self, repo_id, operations, **kwargs):
        self.calls.append(("create_commit", {"repo_id": repo_id, "operations": operations, **kwargs}))

        class Commit:
            commit_url = f"https://hub.example/{repo_id}/commit/1"

        return Commit()


def test_push_uploads_the_pipeline_and_the_model_card(tmp_path, saved_model):
    folder, _, _ = saved_model
    card = tmp_path / "model_card.md"
    card.write_text("---\nlibrary_name: diffusers\n---\n# FusionFM test\n")
    api = RecordingApi()
    url = push_folder_to_hub(folder, "me/fusionfm", model_card=card, api=api)
    assert url.endswith("/commit/1")
    (_, repo), (_, commit) = api.calls
    assert repo["exist_ok"] is True
    uploaded = {op.path_in_repo: op for op in commit["operations"]}
    assert sorted(uploaded) == ["README.md", "image_processor/processor_config.json", "model_index.json",
                                "scheduler/scheduler_config.json", "unet/config.json",
                                "unet/diffusion_pytorch_model.safetensors"]
    assert Path(uploaded["README.md"].path_or_fileobj).read_text().startswith("---\nlibrary_name")
    index = json.loads(Path(uploaded["model_index.json"].path_or_fileobj).read_text())
    assert index["unet"] == ["fusionfm.unet", "FusionUNet"]


def test_push_refuses_pickles_and_non_pipelines(tmp_path, saved_model):
    folder, _, _ = saved_model
    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ValueError, match="pickled weights .*unet/diffusion_pytorch_model.bin"):
        upload_operations(folder)
    with pytest.raises(ValueError, match="no model_index.json"):
        upload_operations(tmp_path)


def test_default_model_follows_the_environment_then_the_bundled_folder(tmp_path, monkeypatch):
    from fusionfm import FusionFMPipeline, hub

    make_pipeline().save_pretrained(tmp_path / "mine")
    monkeypatch.setenv(hub.DEFAULT_MODEL_ENV, str(tmp_path / "mine"))
    assert FusionFMPipeline.from_pretrained().unet.config.block_out_channels == [8, 16]
    monkeypatch.delenv(hub.DEFAULT_MODEL_ENV)
    assert hub.default_model() == str(hub.BUNDLED_MODEL_DIR)  # the repository ships model/
    monkeypatch.setattr(hub, "BUNDLED_MODEL_DIR", tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="FUSIONFM_MODEL"):
        FusionFMPipeline.from_pretrained()
