"""Hugging Face Hub helpers: download a pipeline snapshot, and push a pipeline folder with its card.

diffusers cannot resolve our own classes (``["fusionfm.unet", "FusionUNet"]`` in model_index.json)
when it is given a Hub repo id directly, so :meth:`FusionFMPipeline.from_pretrained` first fetches
the snapshot here and then loads the local folder. Only JSON, safetensors and Markdown files are
fetched or uploaded: FusionFM never loads pickled weights.
"""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi, snapshot_download

PIPELINE_FILE_PATTERNS = ["model_index.json", "*/config.json", "*/scheduler_config.json",
                          "*/processor_config.json", "*/*.safetensors", "*.md"]
"""The files that make up a FusionFM pipeline on the Hub."""

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")

DEFAULT_MODEL_ENV = "FUSIONFM_MODEL"
"""Environment variable naming the default pipeline (a folder or a Hub id) instead of the bundled one."""

BUNDLED_MODEL_DIR = Path(__file__).resolve().parent / "default_model"
"""The default model, shipped inside the package (diffusers layout; package data of the wheel too)."""

DOWNLOAD_KWARGS = ("revision", "cache_dir", "token", "local_files_only", "force_download", "proxies")
"""``from_pretrained`` keyword arguments that belong to the download, not to diffusers."""


def default_model() -> str:
    """The pipeline to load when none is named: ``$FUSIONFM_MODEL`` if set, else the bundled model
    (``fusionfm/default_model``, installed with the package).

    Raises:
        FileNotFoundError: neither is available (a source tree without the model files).
    """
    named = os.environ.get(DEFAULT_MODEL_ENV, "").strip()
    if named:
        return named
    if (BUNDLED_MODEL_DIR / "model_index.json").is_file():
        return str(BUNDLED_MODEL_DIR)
    raise FileNotFoundError(
        f"No default FusionFM model: {BUNDLED_MODEL_DIR} has no model_index.json and {DEFAULT_MODEL_ENV} is not set. "
        f"Set {DEFAULT_MODEL_ENV} to a pipeline folder or Hub id, or pass one to from_pretrained."
    )


def resolve_pipeline_path(name_or_path: str | os.PathLike, **download_kwargs) -> Path:
    """A local folder holding the pipeline: ``name_or_path`` itself, or a Hub snapshot of it.

    Hub ids are fetched with ``huggingface_hub.snapshot_download`` (honours ``HF_ENDPOINT``,
    ``HF_HOME`` and ``HF_HUB_OFFLINE``; with ``local_files_only=True`` or offline, only the cache).

    Raises:
        FileNotFoundError: a local-looking path that does not exist.
        OSError: the Hub id could not be fetched (with the reason from huggingface_hub).
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise FileNotFoundError(f"{path} is a folder but has no model_index.json; is it a FusionFM pipeline?")
        return path
    text = str(name_or_path)
    if path.is_absolute() or text.startswith((".", "~")) or text.count("/") > 1 or os.sep + os.sep in text:
        raise FileNotFoundError(f"No pipeline folder at {text}.")
    try:
        folder = snapshot_download(repo_id=text, allow_patterns=PIPELINE_FILE_PATTERNS, **download_kwargs)
    except Exception as error:  # huggingface_hub raises many types; say which repo and why
        raise OSError(
            f"Could not fetch the FusionFM pipeline {text!r} from the Hub ({type(error).__name__}: {error}). "
            "Check the repo id, your network or HF_ENDPOINT, or pass a local folder."
        ) from error
    return Path(folder)


def upload_operations(
    folder: str | os.PathLike, model_card: str | os.PathLike | None = None
) -> list[CommitOperationAdd]:
    """The files a push of ``folder`` would upload, as commit operations (no network).

    The pipeline files of :data:`PIPELINE_FILE_PATTERNS`, plus ``model_card`` as ``README.md``.

    Raises:
        ValueError: the folder is not a pipeline, or holds pickled weights.
    """
    folder = Path(folder)
    if not (folder / "model_index.json").is_file():
        raise ValueError(f"{folder} has no model_index.json; save the pipeline with save_pretrained first.")
    pickles = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.suffix in PICKLE_SUFFIXES]
    if pickles:
        raise ValueError(f"{folder} holds pickled weights ({', '.join(pickles)}); FusionFM ships safetensors only.")
    files = sorted({p for pattern in PIPELINE_FILE_PATTERNS for p in folder.glob(pattern) if p.is_file()})
    operations = [
        CommitOperationAdd(path_in_repo=p.relative_to(folder).as_posix(), path_or_fileobj=str(p))
        for p in files
        if not (model_card is not None and p.relative_to(folder).as_posix() == "README.md")
    ]
    if model_card is not None:
        operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=str(model_card)))
    return operations


def push_folder_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    model_card: str | os.PathLike | None = None,
    commit_message: str = "Upload FusionFM pipeline",
    private: bool | None = None,
    token: str | None = None,
    api: HfApi | None = None,
) -> str:
    """Create ``repo_id`` if needed and upload a saved pipeline folder with its model card.

    Returns the commit URL.
    """
    api = api or HfApi(token=token)
    operations = upload_operations(folder, model_card)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    commit = api.create_commit(repo_id, operations=operations, commit_message=commit_message, repo_type="model")
    return str(commit.commit_url)
