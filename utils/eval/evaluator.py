"""The evaluation engine behind val.py and the trainer: a model over a dataset split -> COCO AP, P and R,
the per-class table, mean losses, speed.

    result = evaluate(model, loader, data, EvalOptions(classwise=True), save_dir, compute_loss)  # trainer
    result = run_val(ValOptions(data="data/demo.yaml", weights="best.pt", imgsz=320))             # val.py
    (p, r, map50, map_, *losses), class_maps, times = result

``evaluate`` takes a model in eval mode and a non-augmented loader as given; ``run_val`` loads weights
(a checkpoint, official YOLOX .pth, .onnx, or an OpenVINO .xml) and builds the loader. mAP comes from
COCOeval (utils/eval/coco_eval.py), P and R from ap_per_class. Official YOLOX weights are evaluated as
official YOLOX does (top-left letterbox, boxes divided by the resize ratio).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from utils.data.augment import LETTERBOX_MODES
from utils.data.dataset_yaml import load_data_config, split_source
from utils.data.datasets import create_dataloader
from utils.devices import select_device
from utils.eval import coco_eval
from utils.eval.metrics import ap_per_class, match_predictions
from utils.infer.backends import detections_to_original, forward, load_weights, warn_dropped
from utils.infer.nms import non_max_suppression
from utils.runs import increment_path

LOGGER = logging.getLogger("yolox5.val")
TASKS = ("val", "test", "speed")
HEADER = ("Class", "Images", "Instances", "P", "R", "mAP50", "mAP50-95")


@dataclass(frozen=True)
class EvalOptions:
    """How a split is evaluated."""

    conf_thres: float = 0.001
    iou_thres: float = 0.65
    max_det: int = 300
    task: str = "val"                  # val, test, or speed (timing only, no COCOeval)
    single_cls: bool = False
    save_json: bool = False            # predictions.json (COCO results format)
    classwise: bool = False            # print the per-class AP table
    verbose: bool = False              # P, R, AP per class; COCOeval's messages
    plots: bool = False                # val_batch0_labels.jpg / val_batch0_pred.jpg
    coco_backend: str = "auto"         # faster-coco-eval where installed, else pycocotools; or either one

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.coco_backend not in coco_eval.BACKENDS:
            raise ValueError(f"coco_backend must be one of {coco_eval.BACKENDS}, got {self.coco_backend!r}")
        for name in ("conf_thres", "iou_thres"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if int(self.max_det) < 1:
            raise ValueError(f"max_det must be >= 1, got {self.max_det}")

    @property
    def split(self) -> str:
        return "val" if self.task == "speed" else self.task


@dataclass(frozen=True)
class ValOptions(EvalOptions):
    """Standalone evaluation (val.py): what to load and run, and where the outputs go."""

    data: str | dict = "data/demo.yaml"
    weights: str | Path | None = None
    cfg: str | Path | None = None      # model YAML for official weights (inferred when left out)
    batch_size: int = 32
    imgsz: int = 640
    device: str = "cpu"
    workers: int = 8
    half: bool = False                 # float16 inference (CUDA)
    letterbox: str | None = None       # default: what the weights expect (topleft for official YOLOX)
    qdq_exact: bool = False            # an int8 QDQ ONNX file as written: its exact 8-bit arithmetic
    project: str | Path = "runs/val"
    name: str = "exp"
    exist_ok: bool = False
    save_dir: str | Path | None = None  # default: project/name, numbered

    def __post_init__(self):
        super().__post_init__()
        if self.weights is None:
            raise ValueError("evaluation needs --weights (a checkpoint, .pth, .onnx or OpenVINO .xml)")
        if self.letterbox is not None and self.letterbox not in LETTERBOX_MODES:
            raise ValueError(f"letterbox must be one of {LETTERBOX_MODES}, got {self.letterbox!r}")
        for name in ("batch_size", "imgsz"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if int(self.workers) < 0:
            raise ValueError(f"--workers must be >= 0, got {self.workers}")

    def eval_options(self) -> EvalOptions:
        return EvalOptions(**{f.name: getattr(self, f.name) for f in fields(EvalOptions)})


class EvalResult(NamedTuple):
    metrics: tuple           # (P, R, mAP50, mAP50-95) and, with a loss, its mean items
    class_maps: np.ndarray   # [nc] AP50-95 per class (the overall mAP for classes without ground truth)
    times: tuple             # ms per image: pre-process, inference, NMS


# ---- standalone -----------------------------------------------------------------------------------
def run_val(opts: ValOptions) -> EvalResult:
    """Load the weights, build the split's loader and evaluate (val.py)."""
    data = opts.data if isinstance(opts.data, dict) else load_data_config(opts.data)
    source = split_source(data, opts.split)  # raises when the dataset has no such split
    device = select_device(opts.device)
    model, letterbox = load_weights(opts.weights, opts.cfg, device, opts.imgsz, qdq_exact=opts.qdq_exact)
    half = opts.half and device.type != "cpu" and isinstance(model, torch.nn.Module)
    if half:
        model.half()
    _check_nc(model, opts.weights, _class_names(data, opts.single_cls), data, opts.single_cls)
    stride = int(max(getattr(model, "stride", torch.tensor([32.0])).max(), 32))
    loader, _ = create_dataloader(imgsz=opts.imgsz, batch_size=opts.batch_size, stride=stride, augment=False,
                                  workers=opts.workers, prefix=f"{opts.split}: ", nc=data["nc"],
                                  letterbox_mode=opts.letterbox or letterbox, **source)
    save_dir = Path(opts.save_dir) if opts.save_dir is not None else \
        increment_path(Path(opts.project) / opts.name, opts.exist_ok)
    return evaluate(model, loader, data, opts.eval_options(), save_dir=save_dir, standalone=True)


# ---- the engine ---------------------------------------------------------------------------------------
@torch.no_grad()  # not inference_mode: grids cached here are reused by training's autograd
def evaluate(model, dataloader, data: dict, opts: EvalOptions = EvalOptions(), save_dir=None, compute_loss=None,
             standalone: bool = False) -> EvalResult:
    """Evaluate ``model`` (eval mode) on ``dataloader`` (non-augmented) of the dataset ``data`` (a dict of
    load_data_config); ``compute_loss`` adds its mean loss items from the same forward. ``standalone``
    (val.py) also prints speed and the COCO summary and writes results.txt."""
    split = opts.split
    split_source(data, split)  # raises when the dataset has no such split
    if getattr(model, "training", False):
        raise ValueError("evaluation needs the model in eval mode (model.eval()): it returns the decoded output then")
    names = _class_names(data, opts.single_cls)
    _check_nc(model, None, names, data, opts.single_cls)
    dataset = dataloader.dataset
    if len(dataset) == 0:
        raise ValueError(f"{data.get('yaml_file', 'data')}: the '{split}' split has no usable images")
    if save_dir is None and (opts.save_json or opts.plots):
        raise ValueError("evaluate: save_json and plots write to save_dir; pass one")
    if save_dir is not None and (standalone or opts.save_json or opts.plots):
        Path(save_dir).mkdir(parents=True, exist_ok=True)

    evaluated = opts.task != "speed"
    gt, image_ids, category_ids = ground_truth(data, split, dataset, names, opts.single_cls) if evaluated \
        else (None, coco_eval.image_ids_for(dataset.im_files), coco_eval.category_ids_for(names))
    device, half = _device_of(model)
    loop = _Loop(len(names), device, half, opts, dataset, dict(zip(dataset.im_files, image_ids)), category_ids,
                 compute_loss)
    desc = ("{:>22}" + "{:>11}" * 6).format(*HEADER)
    for batch in tqdm(dataloader, desc=desc, bar_format="{l_bar}{bar:10}{r_bar}"):
        loop.batch(model, *batch)

    warn_dropped(loop.dropped)
    coco = _coco_metrics(gt, loop.jdict, image_ids, category_ids, opts.coco_backend, opts.verbose) if evaluated \
        else None
    metrics, times = loop.metrics(), loop.times_ms()
    _print_results(names, metrics, coco, loop, times, opts, standalone, len(dataset))
    _save(save_dir, loop.jdict if opts.save_json else None, coco if standalone else None, names)
    if opts.plots and save_dir is not None and loop.first is not None:
        _plot_first_batch(loop.first, Path(save_dir), names)
    mp, mr = (float(metrics.p.mean()), float(metrics.r.mean())) if metrics is not None else (0.0, 0.0)
    map50, map_ = (float(coco.stats[1]), float(coco.stats[0])) if coco else (0.0, 0.0)
    return EvalResult((mp, mr, map50, map_, *loop.loss_mean()), _class_maps(coco, len(names)), times)


# ---- ground truth -------------------------------------------------------------------------------------
def ground_truth(data: dict, split: str, dataset, names: list[str], single_cls: bool):
    """(COCO ground-truth dict, image id per dataset file, class index -> category id).

    The dataset's own COCO json when it has one (crowd boxes kept), else one built from its labels.
    """
    json_path = data.get(f"{split}_json") or getattr(getattr(dataset, "coco", None), "json_path", None)
    if json_path:
        gt = coco_eval.gt_from_json(json_path, single_cls=single_cls, single_name=names[0])
        category_ids = [1] if single_cls else coco_eval.json_category_ids(gt, len(names), str(json_path))
        return gt, coco_eval.image_ids_from_json(gt, dataset.im_files, str(json_path)), category_ids
    image_ids = coco_eval.image_ids_for(dataset.im_files)
    category_ids = coco_eval.category_ids_for(names)
    labels = [_single(lb) for lb in dataset.labels] if single_cls else dataset.labels
    return coco_eval.gt_from_labels(image_ids, dataset.im_files, labels, dataset.shapes, names, category_ids), \
        image_ids, category_ids


def _single(labels: np.ndarray) -> np.ndarray:
    labels = np.array(labels, dtype=np.float32).reshape(-1, 5)
    labels[:, 0] = 0
    return labels


def _labels_xyxy(labels: np.ndarray, h0: int, w0: int) -> torch.Tensor:
    """[n, 5] (class, cx, cy, w, h) normalised -> [n, 5] (class, x1, y1, x2, y2) original pixels."""
    lb = torch.as_tensor(np.asarray(labels, dtype=np.float32).reshape(-1, 5)).clone()
    xy, wh = lb[:, 1:3] * torch.tensor([w0, h0]), lb[:, 3:5] * torch.tensor([w0, h0])
    return torch.cat((lb[:, :1], xy - wh / 2, xy + wh / 2), 1)


def _class_names(data: dict, single_cls: bool) -> list[str]:
    names = list(data["names"])
    return (names if len(names) == 1 else ["item"]) if single_cls else names


def _check_nc(model, weights, names: list[str], data: dict, single_cls: bool) -> None:
    model_nc = getattr(model, "nc", None)
    if model_nc is not None and not single_cls and model_nc != len(names):
        raise ValueError(f"{weights or 'the model'} predicts {model_nc} classes but "
                         f"{data.get('yaml_file', 'the data')} names {len(names)}: weights and --data do not "
                         f"belong together")


def _device_of(model):
    """(device, half) of a torch model; its dtype decides the input's. Other models run on the CPU."""
    param = next(model.parameters(), None) if hasattr(model, "parameters") else None
    if param is None:
        return torch.device("cpu"), False
    return param.device, param.dtype == torch.float16


# ---- the batch loop ---------------------------------------------------------------------------------
class _Loop:
    """What the batch loop accumulates: matches for P/R, COCO rows, losses, times."""

    def __init__(self, nc: int, device, half: bool, opts: EvalOptions, dataset, image_id_of: dict,
                 category_ids: list, compute_loss=None):
        self.nc, self.device, self.half, self.opts = nc, device, half, opts
        self.letterbox = getattr(dataset, "letterbox_mode", "center")
        self.labels = dataset.labels  # per image [n, 5] (class, cx, cy, w, h) normalised to the original
        self.index_of = {f: i for i, f in enumerate(dataset.im_files)}
        self.image_id_of, self.category_ids, self.compute_loss = image_id_of, category_ids, compute_loss
        self.stats = []  # per image: (correct [K, 10], score [K], class [K], label classes [M])
        self.jdict = []  # COCO result rows
        self.loss = None  # summed loss items
        self.dropped = 0  # detections with a non-finite box or score, left out
        self.n_batches = self.seen = 0
        self.dt = [0.0, 0.0, 0.0]  # seconds: pre-process, inference, NMS
        self.shape = None  # the first batch's input shape
        self.first = None  # the first batch (images, targets, detections in input pixels, paths) for plots

    def batch(self, model, images, targets, paths, shapes):
        opts = self.opts
        t0 = self._clock()
        im = images.to(self.device, non_blocking=True)
        im = im.half() if self.half else im.float()  # BGR 0-255, no /255: official YOLOX's input
        t1 = self._clock()
        out, raw = forward(model, im, with_raw=self.compute_loss is not None)
        t2 = self._clock()
        if out.shape[-1] != 5 + self.nc and not opts.single_cls:
            raise ValueError(f"the model outputs {out.shape[-1] - 5} class scores per anchor, the data has {self.nc} classes")
        if raw is not None:
            items = self.compute_loss(raw, targets.to(self.device))[1].float().cpu()
            self.loss = items if self.loss is None else self.loss + items
        dets = non_max_suppression(out.float(), opts.conf_thres, opts.iou_thres, agnostic=opts.single_cls,
                                   max_det=opts.max_det)
        t3 = self._clock()
        self.dt = [a + b for a, b in zip(self.dt, (t1 - t0, t2 - t1, t3 - t2))]
        self.n_batches += 1
        self.shape = self.shape or tuple(im.shape)
        if self.first is None:
            self.first = (images.cpu(), targets.cpu(), [d.detach().cpu() for d in dets], paths)
        for det, path, shape in zip(dets, paths, shapes):
            self._image(det, path, shape, tuple(im.shape[2:]))

    def _image(self, det, path, shape, input_hw):
        self.seen += 1
        det = det.detach().cpu()
        if self.opts.single_cls:
            det[:, 5] = 0
        det, dropped = detections_to_original(det, shape, input_hw, self.letterbox)  # [K, 6] original px
        self.dropped += dropped
        h0, w0 = shape[0]
        labels = _labels_xyxy(self.labels[self.index_of[path]], h0, w0)  # [M, 5] original pixels
        if self.opts.single_cls:
            labels[:, 0] = 0
        self.stats.append((match_predictions(det, labels), det[:, 4], det[:, 5], labels[:, 0]))
        self.jdict += coco_eval.detections_to_coco(det, self.image_id_of[path], self.category_ids)

    def _clock(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def metrics(self):
        """ap_per_class over all images, or None when there are no labels."""
        if not self.stats:
            return None
        correct, conf, pred_cls, target_cls = (torch.cat(x, 0).numpy() for x in zip(*self.stats))
        if len(target_cls) == 0:
            return None
        return ap_per_class(correct, conf, pred_cls, target_cls)

    def target_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """[nc] labels per class, and [nc] images holding the class."""
        counts, images = np.zeros(self.nc, dtype=int), np.zeros(self.nc, dtype=int)
        for _, _, _, tcls in self.stats:
            c = tcls.long().numpy()
            counts += np.bincount(c, minlength=self.nc)[:self.nc]
            images[np.unique(c)] += 1
        return counts, images

    def times_ms(self) -> tuple[float, float, float]:
        return tuple(x / max(self.seen, 1) * 1e3 for x in self.dt)

    def loss_mean(self) -> list[float]:
        return [] if self.loss is None else (self.loss / max(self.n_batches, 1)).tolist()


# ---- results --------------------------------------------------------------------------------------
def _coco_metrics(gt, jdict, image_ids, category_ids, backend, verbose):
    if gt is None or not gt["annotations"]:
        LOGGER.warning("WARNING no ground-truth boxes in this split: COCO metrics skipped "
                       "(--save-json still writes the predictions)")
        return None
    return coco_eval.evaluate(gt, jdict, image_ids, category_ids, backend=backend, verbose=verbose)


def _class_maps(coco, nc: int) -> np.ndarray:
    """[nc] AP50-95 per class; classes without ground truth get the overall mAP (as YOLOv5)."""
    maps = np.zeros(nc) + (coco.stats[0] if coco else 0.0)
    if coco is not None:
        valid = ~np.isnan(coco.class_ap)
        maps[valid] = coco.class_ap[valid]
    return maps


def _print_results(names, metrics, coco, loop: _Loop, times, opts: EvalOptions, standalone: bool, n_images: int):
    counts, images = loop.target_counts()
    mp, mr = (metrics.p.mean(), metrics.r.mean()) if metrics is not None else (0.0, 0.0)
    map50, map_ = (coco.stats[1], coco.stats[0]) if coco else (0.0, 0.0)
    row = "{:>22}{:>11}{:>11}" + "{:>11.3g}" * 4
    print(row.format("all", n_images, int(counts.sum()), mp, mr, map50, map_))
    if opts.verbose and len(names) > 1 and metrics is not None and coco is not None:
        p_of = dict(zip(metrics.classes.astype(int).tolist(), zip(metrics.p, metrics.r)))
        for c, name in enumerate(names):
            if counts[c]:
                p, r = p_of.get(c, (0.0, 0.0))
                print(row.format(name, int(images[c]), int(counts[c]), p, r, coco.class_ap50[c], coco.class_ap[c]))
    if standalone:
        shape = loop.shape or ()
        print(f"Speed: {times[0]:.1f}ms pre-process, {times[1]:.1f}ms inference, {times[2]:.1f}ms NMS per image "
              f"at shape {shape}")
    if coco is not None and (opts.verbose or standalone):
        print(coco.summary)
    if coco is not None and opts.classwise:
        print(coco_eval.classwise_table(names, coco.class_ap))


def _save(save_dir, jdict, coco, names) -> None:
    """predictions.json (COCO results format) and results.txt (COCOeval summary and per-class table)."""
    if jdict is not None and save_dir is not None:
        f = Path(save_dir) / "predictions.json"
        f.write_text(json.dumps(jdict))
        print(f"predictions saved to {f} ({len(jdict)} detections)")
    if coco is not None and save_dir is not None:
        table = coco_eval.classwise_table(names, coco.class_ap)
        (Path(save_dir) / "results.txt").write_text(f"{coco.summary}\n\n{table}\n")


def _plot_first_batch(first, save_dir: Path, names) -> None:
    """val_batch0_labels.jpg and val_batch0_pred.jpg: the same images with ground truth and predictions."""
    from utils.plots import plot_images

    images, targets, dets, paths = first
    plot_images(images, targets, paths, save_dir / "val_batch0_labels.jpg", names)
    rows = [torch.cat((torch.full((len(d), 1), float(i)), d[:, 5:6], d[:, :5]), 1) for i, d in enumerate(dets)]
    preds = torch.cat(rows) if rows else torch.zeros(0, 7)  # [K, 7] (img, cls, x1, y1, x2, y2, score)
    plot_images(images, preds, paths, save_dir / "val_batch0_pred.jpg", names)
