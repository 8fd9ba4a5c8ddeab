"""Non-maximum suppression in plain torch (torchvision cannot be installed beside the CPU torch here).

    dets = non_max_suppression(model(x))   # eval output [B, N, 5 + nc] -> B tensors [K, 6]

Greedy NMS, exactly: boxes are visited in decreasing score order and a box is kept unless a kept,
higher-scored box of the same class overlaps it by IoU > iou_thres (torchvision's ``batched_nms``
semantics). The greedy pass is vectorised: candidates are taken in chunks of CHUNK boxes in score
order; a chunk is first cleared against the boxes already kept, then the greedy decision among its
survivors is the fixed point of ``keep[i] = no kept j < i suppresses i``, reached in as many tensor
steps as the longest suppression chain inside the chunk (usually 2-4), never one Python step per box.
The pass stops once max_det boxes are kept (later boxes cannot change earlier decisions), so at
8400 candidates it usually looks at one or two chunks; IoU matrices stay CHUNK x (kept + CHUNK).
benchmarks/bench_nms.py measures it.
"""
from __future__ import annotations

import torch

from utils.boxes import box_iou_xyxy, cxcywh_to_xyxy

CHUNK = 256  # candidates per block of the greedy pass: IoU matrices stay CHUNK x (kept + CHUNK)
MAX_NMS = 30000  # candidates per image entering NMS (highest scores), as YOLOv5; 8400 anchors at 640


def non_max_suppression(prediction: torch.Tensor, conf_thres: float = 0.001, iou_thres: float = 0.65,
                        classes=None, agnostic: bool = False, max_det: int = 300,
                        max_nms: int = MAX_NMS) -> list[torch.Tensor]:
    """Official YOLOX postprocess with a max_det cap: one [K, 6] tensor per image.

    prediction: [B, N, 5 + nc] eval output (cx, cy, w, h in pixels, obj, class probabilities).
    Each anchor keeps its single best class (score = obj * class probability, as official YOLOX);
    anchors with score >= conf_thres (official's >=) enter NMS, at most ``max_nms`` of them, the
    best-scored; ``classes`` keeps only those class indices; ``agnostic`` suppresses across classes.
    Returns per image [K, 6] = (x1, y1, x2, y2, score, class), K <= max_det, sorted by score
    (descending; equal scores in anchor order).
    """
    _check_args(prediction, conf_thres, iou_thres, max_det)
    class_filter = None if classes is None else torch.as_tensor(classes, device=prediction.device).long().view(-1)
    return [_nms_image(x, conf_thres, iou_thres, class_filter, agnostic, max_det, max_nms) for x in prediction]


def _check_args(prediction, conf_thres, iou_thres, max_det) -> None:
    if not isinstance(prediction, torch.Tensor) or prediction.dim() != 3 or prediction.shape[-1] < 6:
        shape = tuple(prediction.shape) if isinstance(prediction, torch.Tensor) else type(prediction).__name__
        raise ValueError(f"non_max_suppression: prediction must be the eval output [B, N, 5 + nc] with nc >= 1, "
                         f"got {shape}")
    if not 0.0 <= conf_thres <= 1.0:
        raise ValueError(f"non_max_suppression: conf_thres must be in [0, 1], got {conf_thres}")
    if not 0.0 <= iou_thres <= 1.0:
        raise ValueError(f"non_max_suppression: iou_thres must be in [0, 1], got {iou_thres}")
    if int(max_det) < 1:
        raise ValueError(f"non_max_suppression: max_det must be >= 1, got {max_det}")


def _nms_image(x: torch.Tensor, conf_thres, iou_thres, class_filter, agnostic, max_det, max_nms) -> torch.Tensor:
    """x: [N, 5 + nc] of one image -> [K, 6]."""
    cls_conf, cls_pred = x[:, 5:].max(1)  # [N], [N]: the single best class (official postprocess)
    score = x[:, 4] * cls_conf  # [N]
    keep = score >= conf_thres  # [N]
    if class_filter is not None:
        keep &= torch.isin(cls_pred, class_filter)
    idx = keep.nonzero().squeeze(1)  # [n] anchor indices, ascending
    if idx.numel() > max_nms:  # best-scored first; stable so equal scores stay in anchor order
        idx = idx[score[idx].argsort(descending=True, stable=True)[:max_nms]].sort().values
    boxes = cxcywh_to_xyxy(x[idx, :4])  # [n, 4]
    score, cls_pred = score[idx], cls_pred[idx]
    kept = nms(boxes, score, iou_thres, None if agnostic else cls_pred, max_keep=max_det)  # [K]
    return torch.cat((boxes[kept], score[kept, None], cls_pred[kept, None].to(x.dtype)), 1)  # [K, 6]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_thres: float,
                max_keep: int | None = None) -> torch.Tensor:
    """Class-aware NMS: boxes [n, 4] xyxy, scores [n], idxs [n] classes -> kept indices [K], by score.

    Boxes of different classes never suppress each other. Instead of torchvision's coordinate
    offset (boxes + class * (max + 1)), which loses float32 precision on large offsets and fails
    with negative coordinates, a class-equality mask keeps classes apart exactly; the pass stays in
    global score order, so it can stop as soon as ``max_keep`` boxes are kept.
    """
    return nms(boxes, scores, iou_thres, idxs, max_keep)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_thres: float, idxs: torch.Tensor | None = None,
        max_keep: int | None = None, chunk: int = CHUNK) -> torch.Tensor:
    """Greedy NMS: boxes [n, 4] xyxy, scores [n] -> kept indices [K], by decreasing score.

    idxs [n] (optional): class of each box; boxes of different classes do not suppress each other.
    Equal scores are visited in index order (a stable sort), so of identical boxes the first is kept.
    max_keep: stop once that many are kept; exact, because a greedy decision depends only on
    higher-scored boxes, so the first max_keep kept boxes do not depend on the rest.
    """
    order = scores.argsort(descending=True, stable=True)  # [n]
    boxes = boxes[order]
    idxs = idxs[order] if idxs is not None else None
    kept = boxes.new_zeros(0, dtype=torch.long)  # positions in score order
    for start in range(0, order.numel(), chunk):
        end = min(start + chunk, order.numel())
        kept = torch.cat((kept, start + _greedy_chunk(boxes, idxs, kept, start, end, iou_thres)))
        if max_keep is not None and kept.numel() >= max_keep:
            break
    return order[kept[:max_keep]]


def _greedy_chunk(boxes, idxs, kept_before, start, end, iou_thres) -> torch.Tensor:
    """Positions (relative to start) kept among the score-sorted boxes[start:end], given the
    positions kept before them."""
    alive = torch.arange(end - start, device=boxes.device)  # [C] candidates of this chunk
    if kept_before.numel():
        over = _overlaps(boxes[kept_before], boxes[start:end], iou_thres,
                         None if idxs is None else (idxs[kept_before], idxs[start:end]))  # [k, C]
        alive = alive[~over.any(0)]  # [A] not suppressed by an earlier chunk
    cb = boxes[start + alive]  # [A, 4]
    ci = None if idxs is None else idxs[start + alive]
    within = _overlaps(cb, cb, iou_thres, None if ci is None else (ci, ci)).triu(1)  # [A, A]: j before i overlaps i
    keep = torch.ones(alive.numel(), dtype=torch.bool, device=boxes.device)
    while True:  # fixed point of keep[i] = ~any_j(keep[j] & within[j, i]): unique, reached in <= A steps
        new = ~(within & keep[:, None]).any(0)
        if torch.equal(new, keep):
            return alive[keep]
        keep = new


def _overlaps(a, b, iou_thres, classes=None) -> torch.Tensor:
    """[Na, Nb] bool: IoU > iou_thres (and same class, when classes = (class of a, class of b))."""
    over = box_iou_xyxy(a, b) > iou_thres
    if classes is not None:
        over &= classes[0][:, None] == classes[1][None, :]
    return over
