"""TorchScript export: the traced module of any output layout, its metadata in the archive.

    export_torchscript(wrapped, im, "model.torchscript", metadata={...})
    extra = {"config.txt": ""}; m = torch.jit.load("model.torchscript", _extra_files=extra)  # metadata JSON

The traced graph is fixed to the traced input's shape for the grid constants (unless the layout
builds its grid from the input, ExportModel(dynamic_hw=True)); per-level outputs have no grid.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

METADATA_FILE = "config.txt"  # YOLOv5's name for the archive's metadata file


def export_torchscript(model: torch.nn.Module, im: torch.Tensor, path, metadata: dict | None = None) -> Path:
    """torch.jit.trace ``model`` on ``im`` and save it with ``metadata`` as JSON in config.txt."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about constant sizes are expected
        traced = torch.jit.trace(model, im, strict=False, check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={METADATA_FILE: json.dumps(metadata or {})})
    return path


def load_torchscript(path, map_location="cpu", extra_files: dict | None = None):
    """torch.jit.load without its deprecation warning (TorchScript is what this format is)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path), map_location=map_location, _extra_files=extra_files or {})


def read_torchscript_metadata(path) -> dict:
    """The metadata dict stored by export_torchscript (empty when absent)."""
    extra = {METADATA_FILE: ""}
    load_torchscript(path, extra_files=extra)
    return json.loads(extra[METADATA_FILE] or "{}")
