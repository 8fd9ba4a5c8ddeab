"""Checkpoints as plain data: state_dicts, the model YAML, class names and metadata.

Nothing here pickles or unpickles code: files load with ``torch.load(..., weights_only=True)``.
Writes are atomic (temporary file, then rename) so a killed run never leaves half a checkpoint.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch


def save_checkpoint(path, checkpoint: dict) -> Path:
    """Write ``checkpoint`` (tensors, dicts, lists, numbers, strings) atomically to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(checkpoint, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_checkpoint(path) -> dict:
    """Load a checkpoint without running code; clear errors for missing or unreadable files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file or a pickled module: name the file and the reason
        raise ValueError(f"{path}: cannot be read as a weights-only checkpoint ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path}: a checkpoint must be a dict, got {type(ckpt).__name__}")
    return ckpt
