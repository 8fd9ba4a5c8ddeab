"""Detection metrics as YOLOv5 computes them: prediction-label matching at 10 IoU thresholds,
precision / recall at the best mean-F1 confidence, AP per class, and the fitness of a result.

COCO AP itself comes from pycocotools (utils/eval/coco_eval.py); these give P and R, and the per-class AP
YOLOv5 prints, from the same predictions.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from utils.boxes import box_iou_xyxy

IOU_THRESHOLDS = torch.linspace(0.5, 0.95, 10)  # COCO's 0.50:0.05:0.95
FITNESS_WEIGHTS = (0.0, 0.0, 0.1, 0.9)  # [P, R, mAP50, mAP50-95]
RECALL_LEVELS = np.linspace(0.0, 1.0, 101)  # COCOeval's recThrs


def fitness(x) -> np.ndarray | float:
    """0.1 * mAP50 + 0.9 * mAP50-95 of results [..., >= 4] = (P, R, mAP50, mAP50-95, ...)."""
    x = np.asarray(x, dtype=np.float64)
    return (x[..., :4] * np.array(FITNESS_WEIGHTS)).sum(-1)


def match_predictions(detections: torch.Tensor, labels: torch.Tensor,
                      iouv: torch.Tensor = IOU_THRESHOLDS) -> torch.Tensor:
    """Which detections are true positives at each IoU threshold (YOLOv5's process_batch).

    detections: [K, 6] (x1, y1, x2, y2, score, class); labels: [M, 5] (class, x1, y1, x2, y2), in
    the same pixels. At each threshold a label matches at most one detection and a detection at
    most one label, of the same class, highest IoU first. Returns correct [K, T] bool.
    """
    correct = torch.zeros(detections.shape[0], iouv.numel(), dtype=torch.bool, device=detections.device)
    if detections.shape[0] == 0 or labels.shape[0] == 0:
        return correct
    iou = box_iou_xyxy(labels[:, 1:], detections[:, :4])  # [M, K]
    same_class = labels[:, 0:1] == detections[:, 5]  # [M, K]
    for t, thr in enumerate(iouv.tolist()):
        li, di = torch.nonzero((iou >= thr) & same_class, as_tuple=True)  # candidate pairs
        if li.numel() == 0:
            continue
        pairs = torch.stack((li, di, iou[li, di]), 1).cpu().numpy()  # [P, 3] label, detection, iou
        pairs = pairs[pairs[:, 2].argsort()[::-1]]  # best IoU first
        pairs = pairs[np.unique(pairs[:, 1], return_index=True)[1]]  # one label per detection
        pairs = pairs[np.unique(pairs[:, 0], return_index=True)[1]]  # one detection per label
        correct[torch.as_tensor(pairs[:, 1].astype(np.int64), device=correct.device), t] = True
    return correct


class ClassMetrics(NamedTuple):
    """Per class present in the labels: p, r, f1 [C] at the best mean-F1 confidence, ap [C, T]."""
    p: np.ndarray
    r: np.ndarray
    f1: np.ndarray
    ap: np.ndarray
    classes: np.ndarray  # [C] class index of each row


def ap_per_class(tp, conf, pred_cls, target_cls, eps: float = 1e-16) -> ClassMetrics:
    """YOLOv5's ap_per_class.

    tp: [n, T] bool (match_predictions, stacked over images); conf: [n]; pred_cls: [n]; target_cls: [m]
    (the class of every label). Precision and recall curves per class are sampled at 1000 confidences;
    P and R are taken where the mean F1 over classes (smoothed) peaks. AP per class and threshold is the
    COCO's 101-point interpolated AP (compute_ap).
    """
    tp, conf = np.asarray(tp, dtype=bool), np.asarray(conf, dtype=np.float64)
    tp = tp[:, None] if tp.ndim == 1 else tp  # [n, T]
    pred_cls, target_cls = np.asarray(pred_cls), np.asarray(target_cls)
    order = np.argsort(-conf, kind="stable")
    tp, conf, pred_cls = tp[order], conf[order], pred_cls[order]
    classes, n_labels = np.unique(target_cls, return_counts=True)  # [C], [C]
    px = np.linspace(0, 1, 1000)  # confidence axis
    p, r = np.zeros((len(classes), 1000)), np.zeros((len(classes), 1000))
    ap = np.zeros((len(classes), tp.shape[1]))
    for ci, c in enumerate(classes):
        mine = pred_cls == c
        if not mine.any():
            continue
        tpc = tp[mine].cumsum(0)  # [n_c, T]
        fpc = (~tp[mine]).cumsum(0)
        recall = tpc / (n_labels[ci] + eps)
        precision = tpc / (tpc + fpc)
        # curves at IoU 0.5 over confidence: np.interp needs increasing x, confidences decrease
        r[ci] = np.interp(-px, -conf[mine], recall[:, 0], left=0)
        p[ci] = np.interp(-px, -conf[mine], precision[:, 0], left=1)
        for t in range(tp.shape[1]):
            ap[ci, t] = compute_ap(recall[:, t], precision[:, t])
    f1 = 2 * p * r / (p + r + eps)
    best = int(_smooth(f1.mean(0), 0.1).argmax()) if len(classes) else 0
    return ClassMetrics(p[:, best], r[:, best], f1[:, best], ap, classes)


def compute_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """AP of one precision/recall curve [n] (recall non-decreasing) exactly as COCOeval.accumulate:
    the precision envelope read at the first point reaching each of 101 recall levels, 0 beyond the
    last recall, averaged."""
    if len(recall) == 0:
        return 0.0
    envelope = np.flip(np.maximum.accumulate(np.flip(np.asarray(precision, dtype=np.float64))))
    idx = np.searchsorted(recall, RECALL_LEVELS, side="left")  # [101]
    return float(np.where(idx < len(recall), envelope[np.minimum(idx, len(recall) - 1)], 0.0).mean())


def _smooth(y: np.ndarray, fraction: float = 0.05) -> np.ndarray:
    """Box filter over a fraction of the points (odd width), ends padded with the end values."""
    nf = round(len(y) * fraction * 2) // 2 + 1
    pad = np.ones(nf // 2)
    yp = np.concatenate((pad * y[0], y, pad * y[-1]))
    return np.convolve(yp, np.ones(nf) / nf, mode="valid")
