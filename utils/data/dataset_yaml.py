"""Dataset descriptions (data/*.yaml): YOLOv5's keys, plus COCO json splits and the built-in demo set.

Keys: ``path`` (root; relative to the yaml's own folder), ``train`` / ``val`` / ``test`` (a folder of
images, a .txt list of image paths, or a list of those; labels in the parallel ``labels/`` folder),
``names`` (list or {index: name}), ``nc``. A split whose ``<split>_json`` and ``<split>_images`` are both
given reads its labels from that COCO json instead. ``val_json`` alone is the COCO ground truth used
for evaluation. ``generate: demo`` builds the procedural demo dataset on first use.
"""
from __future__ import annotations

from pathlib import Path

from utils.yaml_io import DATA_DIR, read_mapping

SPLITS = ("train", "val", "test")


def load_data_config(path) -> dict:
    """The data yaml as a dict with absolute paths, ``names`` as a list and ``nc`` checked."""
    data, path = read_mapping(path, "dataset description", bundled=DATA_DIR)  # "demo.yaml" finds data/demo.yaml
    data["yaml_file"] = str(path)
    root = Path(data.get("path") or ".")
    root = (path.parent / root).resolve() if not root.is_absolute() else root
    data["path"] = str(root)
    data["names"] = _names(data, path)
    data["nc"] = len(data["names"])
    for split in SPLITS:
        for key in (split, f"{split}_json", f"{split}_images"):
            if data.get(key):
                data[key] = _absolute(data[key], root)
    if data.get("generate") == "demo":
        from utils.data.demo import ensure_demo_dataset

        ensure_demo_dataset(root)
    elif data.get("generate"):
        raise ValueError(f"{path}: unknown generator {data['generate']!r}; known: demo")
    return data


def _names(data: dict, path: Path) -> list[str]:
    names = data.get("names")
    if isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            raise ValueError(f"{path}: 'names' keys must be 0..{len(names) - 1}")
        names = [names[i] for i in range(len(names))]
    if names is None and isinstance(data.get("nc"), int):
        names = [f"class{i}" for i in range(data["nc"])]
    if not isinstance(names, list) or not names:
        raise ValueError(f"{path}: 'names' (a list of class names) is missing")
    if "nc" in data and data["nc"] != len(names):
        raise ValueError(f"{path}: nc is {data['nc']} but {len(names)} names are given")
    return [str(n) for n in names]


def _absolute(value, root: Path):
    if isinstance(value, list):
        return [_absolute(v, root) for v in value]
    p = Path(value)
    return str(p if p.is_absolute() else root / p)


def has_split(data: dict, split: str) -> bool:
    return bool(data.get(split) or (data.get(f"{split}_json") and data.get(f"{split}_images")))


def split_source(data: dict, split: str) -> dict:
    """create_dataloader's source keywords for a split: its COCO json and images folder when both are
    given, else its images (a folder, a .txt list, or a list of those; YOLO labels beside them)."""
    if data.get(f"{split}_json") and data.get(f"{split}_images"):
        return {"path": None, "json": data[f"{split}_json"], "images_dir": data[f"{split}_images"]}
    if data.get(split):
        return {"path": data[split]}
    raise ValueError(f"{data.get('yaml_file', 'the dataset')}: no '{split}' split")
