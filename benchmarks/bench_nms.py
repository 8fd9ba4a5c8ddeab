"""Benchmark utils.infer.nms.non_max_suppression at 8400 candidates (640x640, strides 8/16/32), and COCOeval.

    python -m benchmarks.bench_nms                     # NMS table, then COCOeval with each installed backend
    python -m benchmarks.bench_nms --runs 5 --threads 1 --no-coco

NMS inputs: one image's eval output [1, 8400, 85] (80 classes):
  clustered  boxes jittered (10 %) around 20 objects, obj = U^4, class probabilities uniform: what a
             trained detector's candidates look like
  uniform    boxes anywhere in the image, sides 2..100 px, scores uniform: few overlaps, so NMS keeps
             many and stops only at max_det
  one-blob   all 8400 boxes nearly identical: NMS keeps one per class and must visit every chunk
Measured: median ms per image over --runs after one warm-up, for conf 0.001 (evaluation) and 0.25
(deployment), class-aware and agnostic; K = detections kept. The baseline ("loop") is the textbook
torch NMS (take the best, drop what overlaps it, repeat) run per class, as a pure-torch port of
torchvision would be; the ratio is loop / ours. Both give the same boxes (checked).

COCOeval: --coco-images synthetic images with 8 GTs each, 100 detections per image (jittered GT
copies and noise), evaluated by utils.eval.coco_eval.evaluate with pycocotools and, when installed,
faster-coco-eval; seconds for evaluate + accumulate + summarize and whether the 12 stats agree.

Timings need an otherwise idle machine; the first and last lines print the load average.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from benchmarks import median_seconds
from utils.boxes import box_iou_xyxy, cxcywh_to_xyxy
from utils.infer.nms import non_max_suppression

N, NC, IMG = 8400, 80, 640


def make_input(kind: str, seed: int = 0) -> torch.Tensor:
    """[1, N, 5 + NC] eval output of one image."""
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(1, N, 5 + NC, generator=g)
    if kind == "clustered":
        objects = torch.rand(20, 4, generator=g) * torch.tensor([IMG, IMG, 200.0, 200.0]) + torch.tensor([0, 0, 10.0, 10.0])
        k = torch.randint(0, 20, (N,), generator=g)
        p[0, :, :4] = (objects[k] * (1 + 0.1 * torch.randn(N, 4, generator=g))).abs()
        p[0, :, 4] = torch.rand(N, generator=g) ** 4
    elif kind == "uniform":
        p[..., :2] *= IMG
        p[..., 2:4] = 2 + p[..., 2:4] * 98
    elif kind == "one-blob":
        p[0, :, :4] = torch.tensor([320.0, 320.0, 100.0, 100.0]) + torch.rand(N, 4, generator=g)
    else:
        raise ValueError(kind)
    return p


def loop_nms(prediction: torch.Tensor, conf_thres: float, iou_thres: float, agnostic: bool, max_det: int = 300):
    """The textbook greedy NMS in torch, per class: one IoU row per kept box."""
    x = prediction[0]
    cls_conf, cls = x[:, 5:].max(1)
    score = x[:, 4] * cls_conf
    idx = (score >= conf_thres).nonzero().squeeze(1)
    boxes, score, cls = cxcywh_to_xyxy(x[idx, :4]), score[idx], cls[idx]
    kept = []
    for c in ([None] if agnostic else cls.unique().tolist()):
        members = torch.arange(len(score)) if c is None else (cls == c).nonzero().squeeze(1)
        order = members[score[members].argsort(descending=True, stable=True)]
        while order.numel():
            best = order[0]
            kept.append(int(best))
            order = order[1:][box_iou_xyxy(boxes[best][None], boxes[order[1:]])[0] <= iou_thres]
    kept = torch.tensor(sorted(kept), dtype=torch.long)
    kept = kept[score[kept].argsort(descending=True, stable=True)][:max_det]
    return torch.cat((boxes[kept], score[kept, None], cls[kept, None].float()), 1)


def median_ms(fn, runs: int) -> float:
    return median_seconds(fn, runs) * 1e3


def bench_nms(runs: int) -> None:
    print(f"{'input':<10}{'conf':>7}{'mode':>8}{'K':>6}{'ours ms':>10}{'loop ms':>10}{'ratio':>8}  same")
    for kind in ("clustered", "uniform", "one-blob"):
        p = make_input(kind)
        for conf in (0.001, 0.25):
            for agnostic in (False, True):
                ours = non_max_suppression(p, conf, 0.65, agnostic=agnostic)[0]
                base = loop_nms(p, conf, 0.65, agnostic)
                t_ours = median_ms(lambda: non_max_suppression(p, conf, 0.65, agnostic=agnostic), runs)
                t_loop = median_ms(lambda: loop_nms(p, conf, 0.65, agnostic), max(1, runs // 3))
                same = ours.shape == base.shape and torch.equal(ours, base)
                print(f"{kind:<10}{conf:>7}{'agn' if agnostic else 'class':>8}{len(ours):>6}{t_ours:>10.2f}"
                      f"{t_loop:>10.1f}{t_loop / t_ours:>8.1f}  {'yes' if same else 'NO'}")


def bench_coco(n_images: int) -> None:
    from utils.eval import coco_eval

    rng = np.random.default_rng(0)
    images, anns, dets = [], [], []
    for i in range(1, n_images + 1):
        images.append({"id": i, "file_name": f"{i}.jpg", "height": 480, "width": 640})
        for _ in range(8):
            w, h = rng.uniform(8, 200, 2)
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            c = int(rng.integers(1, 81))
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": c, "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
            for _ in range(6):
                j = rng.normal(0, 0.1, 4)
                dets.append({"image_id": i, "category_id": c, "score": float(rng.random()),
                             "bbox": [x + j[0] * w, y + j[1] * h, w * (1 + j[2]), h * (1 + j[3])]})
        for _ in range(52):  # noise: 100 detections per image in all
            w, h = rng.uniform(8, 200, 2)
            dets.append({"image_id": i, "category_id": int(rng.integers(1, 81)), "score": float(rng.random() * 0.5),
                         "bbox": [float(rng.uniform(0, 600)), float(rng.uniform(0, 440)), w, h]})
    gt = {"images": images, "annotations": anns, "categories": [{"id": c, "name": str(c)} for c in range(1, 81)]}
    print(f"\nCOCOeval on {n_images} images, {len(anns)} GTs, {len(dets)} detections")
    results = {}
    for backend in coco_eval.BACKENDS:
        try:
            coco_eval.coco_api(backend)
        except ImportError:
            print(f"{backend:<12} not installed")
            continue
        t = time.perf_counter()
        results[backend] = coco_eval.evaluate(gt, dets, backend=backend)
        print(f"{backend:<12}{time.perf_counter() - t:>8.2f} s   AP50-95 {results[backend].stats[0]:.4f}")
    if len(results) == 2:
        a, b = results.values()
        print(f"stats identical: {np.array_equal(a.stats, b.stats)}; per-class AP max difference "
              f"{np.nanmax(np.abs(a.class_ap - b.class_ap)):.2e}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--no-coco", action="store_true")
    parser.add_argument("--coco-images", type=int, default=5000)
    opt = parser.parse_args(argv)
    if opt.threads:
        torch.set_num_threads(opt.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}")
    bench_nms(opt.runs)
    if not opt.no_coco:
        bench_coco(opt.coco_images)
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
