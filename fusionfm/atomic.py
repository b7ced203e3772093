"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never half of one.

Every writer goes to a hidden temporary sibling first and is renamed into place with ``os.replace``,
which is atomic on POSIX and Windows file systems. Folders are staged the same way (:func:`staged_folder`).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import PIL.Image


def _temporary(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.tmp")


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a written file to the disk (for files that must survive a power cut, e.g. checkpoints)."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def write_text_atomic(path: str | os.PathLike, text: str, fsync: bool = False) -> Path:
    """Write ``text`` to ``path`` (parents created); returns the path."""
    path = Path(path)
    temporary = _temporary(path)
    temporary.write_text(text)
    if fsync:
        fsync_file(temporary)
    os.replace(temporary, path)
    return path


def write_csv_atomic(
    path: str | os.PathLike, rows: Iterable[Mapping | Sequence], columns: Sequence[str] | None = None
) -> Path:
    """Write a CSV file: with ``columns``, ``rows`` are dicts (extra keys ignored) under that header;
    without, ``rows`` are sequences written as they are (the first one is the header, if any)."""
    path = Path(path)
    temporary = _temporary(path)
    with temporary.open("w", newline="") as handle:
        if columns is None:
            csv.writer(handle).writerows(rows)
        else:
            writer = csv.DictWriter(handle, list(columns), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    os.replace(temporary, path)
    return path


def save_png_atomic(image: PIL.Image.Image, path: str | os.PathLike) -> Path:
    """Save a PIL image as PNG (``fusionfm.image_processor.to_pil`` converts a tensor)."""
    path = Path(path)
    temporary = _temporary(path)
    image.save(temporary, format="PNG")
    os.replace(temporary, path)
    return path


@contextlib.contextmanager
def staged_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Fill a folder atomically: yields a hidden staging folder, renamed to ``folder`` when the block ends.

    An existing ``folder`` is replaced (moved aside first, then deleted). If the block raises, the staging
    folder is removed and ``folder`` is left as it was.
    """
    folder = Path(folder)
    partial = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if folder.exists():
        stale = folder.with_name(f".{folder.name}.stale")
        shutil.rmtree(stale, ignore_errors=True)
        folder.rename(stale)
        shutil.rmtree(stale)
    partial.rename(folder)


def save_pretrained_portable(model, folder: str | os.PathLike) -> Path:
    """``model.save_pretrained(folder)`` (a diffusers model or pipeline) without the local path it was loaded from:
    diffusers writes it into each config as ``_name_or_path``, and it means nothing on another machine. Pair it with
    :func:`staged_folder` to replace a saved model atomically."""
    folder = Path(folder)
    model.save_pretrained(folder)
    for config_file in folder.rglob("*.json"):
        config = json.loads(config_file.read_text())
        if config.pop("_name_or_path", None) is not None:
            write_text_atomic(config_file, json.dumps(config, indent=2, sort_keys=True) + "\n")
    return folder
