"""Reading the project's description files (model, dataset and hyperparameter YAML; COCO json): one
helper, so every file gets the same lookup and the same one-line messages.

    cfg, path = read_mapping("yoloxs.yaml", "model file", bundled=MODELS_DIR)

A bare name that is not a file here finds the bundled copy (``models/``, ``data/``, ``data/hyps/``).
YAML goes through ``yaml.safe_load`` only (no tags that build objects); ``.json`` files through json.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = ROOT / "models"
DATA_DIR = ROOT / "data"
HYPS_DIR = DATA_DIR / "hyps"


def find_file(path, bundled: Path | None = None) -> Path:
    """``path`` if it is a file, else the file of the same name in ``bundled`` if there is one, else ``path``."""
    path = Path(path)
    if not path.is_file() and bundled is not None and (bundled / path.name).is_file():
        return bundled / path.name
    return path


def read_mapping(path, what: str, bundled: Path | None = None, error: type = ValueError,
                 empty_ok: bool = False) -> tuple[dict, Path]:
    """(the file's mapping, the path read). Raises FileNotFoundError("{what} not found: ...") for a missing
    file and ``error`` naming the file for one that does not parse or holds something else than a mapping
    (an empty file is {} when ``empty_ok``)."""
    path = find_file(path, bundled)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as e:
        kind = "json" if path.suffix.lower() == ".json" else "YAML"
        raise error(f"{path}: not valid {kind}: {e}") from None
    if data is None and empty_ok:
        data = {}
    if not isinstance(data, dict):
        raise error(f"{path}: a {what} must hold a mapping, got {type(data).__name__}")
    return data, path
