"""COCO evaluation: ground truth as a COCO object, detections as COCO json, COCOeval, the per-class table.

    gt = gt_from_labels(image_ids, files, labels, shapes, names, category_ids)  # YOLO-txt data, in memory
    gt = gt_from_json("annotations/instances_val2017.json")                     # or the dataset's json
    result = evaluate(gt, predictions, image_ids, category_ids)                  # CocoResult
    print(result.summary); print(classwise_table(names, result.class_ap))

Backends: ``faster`` (the faster-coco-eval package: pycocotools' API and numbers, 9x faster), ``pycocotools``,
or ``auto`` (the default: faster-coco-eval where it imports, else pycocotools; resolve_backend logs the one
used once). All run the same code below.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import io
import itertools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from utils.boxes import xyxy_to_xywh
from utils.data.coco import COCO80_TO_91, read_coco_json

LOGGER = logging.getLogger("yolox5.val")
BACKENDS = ("auto", "faster", "pycocotools")
COCO_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush")


@dataclass
class CocoResult:
    stats: np.ndarray  # [12] COCOeval.stats: AP50-95, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl
    summary: str  # the 12 lines as COCOeval.summarize() prints them
    class_ap: np.ndarray  # [nc] AP50-95 per class (area all, maxDets 100); nan where the class has no GT
    class_ap50: np.ndarray  # [nc] AP50 per class, likewise


@functools.lru_cache(maxsize=None)
def resolve_backend(backend: str = "auto") -> str:
    """The backend "auto" means here: faster-coco-eval where it imports, else pycocotools (logged once)."""
    if backend != "auto":
        return backend
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError:
        LOGGER.info("COCO evaluation: pycocotools (faster-coco-eval is not installed)")
        return "pycocotools"
    LOGGER.info(f"COCO evaluation: faster-coco-eval {getattr(faster_coco_eval, '__version__', '')}".rstrip())
    return "faster"


def coco_api(backend: str = "auto"):
    """(COCO, COCOeval) classes of a backend."""
    backend = resolve_backend(backend)
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
        return COCO, COCOeval
    if backend == "faster":
        try:
            from faster_coco_eval import COCO, COCOeval_faster
        except ImportError:
            raise ImportError("--coco-backend faster needs the faster-coco-eval package: "
                              "pip install faster-coco-eval (or use --coco-backend pycocotools)") from None
        return COCO, COCOeval_faster
    raise ValueError(f"unknown COCO backend {backend!r}; known: {', '.join(BACKENDS)}")


# ---- category ids and image ids -------------------------------------------------------------------
def category_ids_for(names) -> list[int]:
    """COCO's 91-id scheme when the classes are COCO's 80 (in COCO's order), else 1..nc."""
    names = [str(n) for n in names]
    return list(COCO80_TO_91) if tuple(names) == COCO_NAMES else list(range(1, len(names) + 1))


def json_category_ids(gt: dict, nc: int, source: str = "ground truth") -> list[int]:
    """Class index -> category id of a COCO json: sorted ids (as utils.data.coco.CocoLabels reads them)."""
    ids = sorted(c["id"] for c in gt["categories"])
    if len(ids) != nc:
        raise ValueError(f"{source} has {len(ids)} categories but the data names {nc} classes")
    return ids


def image_ids_for(files) -> list[int]:
    """Ids for images without a json: int(file stem) when every stem is a distinct number (COCO's
    000000139.jpg -> 139, as YOLOv5 and COCO's result format expect), else 1..N in file order."""
    stems = [Path(f).stem for f in files]
    if all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems):
        return [int(s) for s in stems]
    return list(range(1, len(files) + 1))


def image_ids_from_json(gt: dict, files, source: str = "ground truth") -> list[int]:
    """The json's id of each image file, matched by file name."""
    by_name = {Path(im["file_name"]).name: im["id"] for im in gt["images"]}
    missing = [f for f in files if Path(f).name not in by_name]
    if missing:
        raise ValueError(f"{source}: {len(missing)} of {len(files)} images are not in its 'images' list, "
                         f"e.g. {Path(missing[0]).name}; is it the json of this split?")
    return [by_name[Path(f).name] for f in files]


# ---- ground truth ------------------------------------------------------------------------------------
def gt_from_labels(image_ids, files, labels, shapes, names, category_ids) -> dict:
    """A COCO ground-truth dict from YOLO labels.

    labels[i]: [n, 5] (class, cx, cy, w, h) normalised to image i; shapes: [N, 2] (h, w) original sizes.
    Boxes in original pixels, area = w * h, iscrowd 0.
    """
    images, annotations = [], []
    for image_id, f, lb, (h, w) in zip(image_ids, files, labels, np.asarray(shapes, dtype=np.float64)):
        images.append({"id": int(image_id), "file_name": Path(f).name, "height": int(h), "width": int(w)})
        lb = np.asarray(lb, dtype=np.float64).reshape(-1, 5)
        for c, cx, cy, bw, bh in lb:
            box = [(cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h]
            annotations.append({"id": len(annotations) + 1, "image_id": int(image_id),
                                "category_id": int(category_ids[int(c)]), "bbox": box,
                                "area": box[2] * box[3], "iscrowd": 0})
    categories = [{"id": int(i), "name": str(n)} for i, n in zip(category_ids, names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def gt_from_json(path, single_cls: bool = False, single_name: str = "item") -> dict:
    """The COCO ground truth of a json file (crowd annotations kept: COCOeval ignores matches to them);
    with single_cls, every annotation becomes category 1."""
    gt = read_coco_json(path, missing="COCO ground truth")
    if single_cls:
        gt["categories"] = [{"id": 1, "name": single_name}]
        for ann in gt["annotations"]:
            ann["category_id"] = 1
    return gt


def build_coco(gt: dict, backend: str = "auto"):
    """A COCO object from a ground-truth dict (deep-copied: COCO adds keys to what it indexes)."""
    COCO, _ = coco_api(backend)
    coco = COCO()
    coco.dataset = copy.deepcopy(gt)
    with contextlib.redirect_stdout(io.StringIO()):  # "creating index... index created!"
        coco.createIndex()
    return coco


# ---- predictions ----------------------------------------------------------------------------------
def detections_to_coco(det: torch.Tensor, image_id: int, category_ids) -> list[dict]:
    """det [K, 6] (x1, y1, x2, y2, score, class) in original-image pixels -> COCO result rows."""
    if det.shape[0] == 0:
        return []
    boxes = xyxy_to_xywh(det[:, :4].float()).tolist()
    scores, classes = det[:, 4].float().tolist(), det[:, 5].long().tolist()
    return [{"image_id": int(image_id), "category_id": int(category_ids[c]),
             "bbox": [round(v, 3) for v in b], "score": round(s, 5)}
            for b, s, c in zip(boxes, scores, classes)]


# ---- evaluation -----------------------------------------------------------------------------------
def evaluate(coco_gt, predictions: list[dict], image_ids=None, category_ids=None,
             backend: str = "auto", verbose: bool = False) -> CocoResult:
    """COCOeval (bbox) of ``predictions`` against ``coco_gt`` (a COCO object or a ground-truth dict).

    image_ids: evaluate these images only (the ones that were run; default all of the ground truth).
    category_ids: class index -> category id, for the per-class APs (default the sorted category ids).
    COCOeval's own progress messages are shown only when verbose.
    """
    backend = resolve_backend(backend)  # the concrete one: faster-coco-eval's COCOeval takes print_function
    if isinstance(coco_gt, dict):
        coco_gt = build_coco(coco_gt, backend)
    _, COCOeval = coco_api(backend)
    category_ids = list(category_ids) if category_ids is not None else sorted(coco_gt.getCatIds())
    chatter = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with chatter:
        # loadRes adds keys to the rows it is given: hand it copies
        coco_dt = coco_gt.loadRes([dict(p) for p in predictions]) if predictions else _empty_results(coco_gt, backend)
        # faster-coco-eval logs through print_function (a silent logger by default); pycocotools prints
        E = COCOeval(coco_gt, coco_dt, "bbox", **({"print_function": print} if backend == "faster" else {}))
        if image_ids is not None:
            E.params.imgIds = [int(i) for i in image_ids]
        E.evaluate()
        E.accumulate()
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        E.summarize()
    class_ap, class_ap50 = _per_class_ap(E, category_ids)
    # faster-coco-eval appends AR@0.5 and AR@0.75: keep pycocotools' 12
    lines = [line for line in summary.getvalue().splitlines() if line.strip()][:12]
    return CocoResult(np.asarray(E.stats, dtype=np.float64)[:12], "\n".join(lines), class_ap, class_ap50)


def _empty_results(coco_gt, backend):
    """A result set with no detections (loadRes cannot take an empty list): every AP is 0."""
    COCO, _ = coco_api(backend)
    coco_dt = COCO()
    coco_dt.dataset = {"images": list(coco_gt.dataset["images"]), "annotations": [],
                       "categories": copy.deepcopy(coco_gt.dataset["categories"])}
    coco_dt.createIndex()
    return coco_dt


def _per_class_ap(E, category_ids) -> tuple[np.ndarray, np.ndarray]:
    """AP50-95 and AP50 per class from E.eval['precision'] [T, R, K, A, M]: the mean over IoU
    thresholds and recall points of area 'all', maxDets 100, ignoring -1 (no ground truth)."""
    precision = np.asarray(E.eval["precision"])
    k_of = {cid: k for k, cid in enumerate(E.params.catIds)}
    ap, ap50 = np.full(len(category_ids), np.nan), np.full(len(category_ids), np.nan)
    for c, cid in enumerate(category_ids):
        if cid not in k_of:
            continue
        p = precision[:, :, k_of[cid], 0, -1]  # [T, R]
        ap[c] = p[p > -1].mean() if (p > -1).any() else np.nan
        ap50[c] = p[0][p[0] > -1].mean() if (p[0] > -1).any() else np.nan
    return ap, ap50


def classwise_table(names, class_ap) -> str:
    """The per-class AP table of seed 004 (mmdetection's classwise layout): three (category, AP)
    pairs per row, AP with 3 decimals, the last row's unused cells blank, +---+ borders."""
    pairs = [(str(n), f"{float(ap):0.3f}") for n, ap in zip(names, class_ap)]
    n_cols = min(6, len(pairs) * 2)
    flat = list(itertools.chain(*pairs))
    header = ["category", "AP"] * (n_cols // 2)
    rows = [["" if v is None else v for v in row]
            for row in itertools.zip_longest(*[flat[i::n_cols] for i in range(n_cols)])]
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(n_cols)]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    lines = ["|" + "|".join(f" {c:<{w}} " for c, w in zip(cells, widths)) + "|" for cells in [header] + rows]
    return "\n".join([rule, lines[0], rule, *lines[1:], rule])
