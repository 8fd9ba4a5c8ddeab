"""COCO json annotations: reading them as training labels, and the category id <-> class index maps."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from utils.yaml_io import read_mapping

# COCO's 80 detection categories use ids 1..90 with gaps; class index i <-> COCO id COCO80_TO_91[i].
COCO80_TO_91 = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28,
                31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55,
                56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84,
                85, 86, 87, 88, 89, 90]


def read_coco_json(path, missing: str = "annotation file") -> dict:
    """A COCO annotation json as a dict, with clear errors for a missing, broken or foreign file."""
    data, path = read_mapping(path, missing)
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise ValueError(f"{path}: not a COCO annotation file, '{key}' is missing")
    return data


class CocoLabels:
    """Per-image training labels of a COCO json: class = position of the category id among the sorted ids
    (as official YOLOX), crowd boxes left out (evaluation reads them from the json itself).

    files: image paths; boxes[i]: float32 [n, 5] = (class, cx, cy, w, h) normalised, unclipped;
    category_ids: sorted category ids (class index -> id); image_ids: json image id per file.
    """

    def __init__(self, json_path, images_dir):
        json_path, images_dir = Path(json_path), Path(images_dir)
        data = read_coco_json(json_path)
        self.json_path = json_path
        self.category_ids = sorted(c["id"] for c in data["categories"])
        self.names = [c["name"] for c in sorted(data["categories"], key=lambda c: c["id"])]
        class_of = {cid: i for i, cid in enumerate(self.category_ids)}
        images = sorted(data["images"], key=lambda im: im["id"])
        self.image_ids = [im["id"] for im in images]
        self.files = [str(images_dir / im["file_name"]) for im in images]
        self.skipped: list[str] = []  # annotation problems, one message each
        rows: dict = {im["id"]: [] for im in images}
        sizes = {im["id"]: (im["width"], im["height"]) for im in images}
        for ann in data["annotations"]:
            if ann.get("iscrowd", 0):
                continue
            image_id, cid = ann.get("image_id"), ann.get("category_id")
            if image_id not in rows or cid not in class_of:
                self.skipped.append(f"annotation {ann.get('id')}: unknown image id {image_id} or category id {cid}")
                continue
            x, y, w, h = ann["bbox"]
            iw, ih = sizes[image_id]
            rows[image_id].append((class_of[cid], (x + w / 2) / iw, (y + h / 2) / ih, w / iw, h / ih))
        self.boxes = [np.array(rows[i], dtype=np.float32).reshape(-1, 5) for i in self.image_ids]

    def class_to_category(self, cls: int) -> int:
        return self.category_ids[int(cls)]
