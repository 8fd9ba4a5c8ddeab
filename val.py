"""Evaluate a detector on a dataset split: COCO AP (pycocotools), P and R, a per-class table, speed.

    python val.py --data data/coco.yaml --weights runs/train/exp/weights/last.pt --batch-size 64 \
        --device 0,1 --save-json --classwise
    python val.py --data data/coco.yaml --weights yolox_s.pth                  # official YOLOX weights
    python val.py --data data/demo.yaml --weights model.onnx --img-size 320     # an ONNX file, onnxruntime
    python val.py --data data/demo.yaml --weights model.int8.xml --img-size 320 # an OpenVINO IR (pip install openvino)

The trainer calls ``run(data, model=..., dataloader=...)`` each epoch. Official YOLOX weights are
evaluated as official YOLOX does (top-left letterbox, boxes divided by the resize ratio).
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from utils.eval import coco_eval
from utils.data.dataset_yaml import load_data_config
from utils.data.datasets import create_dataloader
from utils.devices import select_device
from utils.infer.backends import OnnxModel, decode_raw, forward, load_weights, to_original  # noqa: F401 (val.X API)
from utils.eval.metrics import ap_per_class, match_predictions
from utils.infer.nms import non_max_suppression
from utils.runs import increment_path

LOGGER = logging.getLogger("yolox5.val")
TASKS = ("val", "test", "speed")
LETTERBOX_MODES = ("center", "topleft")
N_LOSS_ITEMS = 4  # ComputeXLoss items: 5 * iou, obj, cls, l1
HEADER = ("Class", "Images", "Instances", "P", "R", "mAP50", "mAP50-95")


# ---- data --------------------------------------------------------------------------------------
def _split(data: dict, task: str) -> str:
    split = "val" if task == "speed" else task
    if not data.get(split) and not (data.get(f"{split}_json") and data.get(f"{split}_images")):
        raise ValueError(f"{data.get('yaml_file', 'the dataset')}: no '{split}' split to evaluate")
    return split


def build_loader(data: dict, split: str, imgsz: int, batch_size: int, stride: int, workers: int,
                 letterbox_mode: str):
    """A non-augmented loader of the split at a square imgsz (as official YOLOX evaluates)."""
    source = dict(json=data[f"{split}_json"], images_dir=data[f"{split}_images"]) \
        if data.get(f"{split}_json") and data.get(f"{split}_images") else {}
    loader, _ = create_dataloader(None if source else data[split], imgsz, batch_size, stride, augment=False,
                                  workers=workers, prefix=f"{split}: ", nc=data["nc"],
                                  letterbox_mode=letterbox_mode, **source)
    return loader


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


# ---- the run ------------------------------------------------------------------------------------------
@dataclass
class _Setup:
    """What the batch loop needs besides the model: thresholds, where each image's GT and id are."""
    conf_thres: float
    iou_thres: float
    max_det: int
    single_cls: bool
    letterbox_mode: str
    labels: list  # dataset.labels: per image [n, 5] (class, cx, cy, w, h) normalised to the original
    index_of: dict  # image path -> index into labels
    image_id_of: dict  # image path -> COCO image id
    category_ids: list  # class index -> COCO category id
    compute_loss: object = None


@torch.no_grad()  # not inference_mode: grids cached here are reused by training's autograd
def run(data, weights=None, batch_size=32, imgsz=640, conf_thres=0.001, iou_thres=0.65, max_det=300, task="val",
        device="cpu", workers=8, single_cls=False, half=False, save_json=False, classwise=False, verbose=False,
        project="runs/val", name="exp", exist_ok=False, model=None, dataloader=None, save_dir=None,
        compute_loss=None, plots=False, cfg=None, letterbox_mode=None, coco_backend="pycocotools"):
    """Evaluate; returns ((P, R, mAP50, mAP50-95, *loss items), per-class mAP50-95 [nc], (pre, inference,
    NMS) ms per image).

    From the trainer: ``model`` (eval mode, on its device) and ``dataloader`` (non-augmented) are used
    as given; ``compute_loss`` adds the mean ComputeXLoss items (5*iou, obj, cls, l1) from the same forward.
    Standalone: ``weights`` (a checkpoint, official YOLOX .pth, .onnx, or an OpenVINO .xml) and ``data`` (a path or the dict
    of load_data_config) build them. mAP comes from COCOeval; P and R from ap_per_class.
    ``plots`` writes the first batch with its labels and with the predictions to save_dir.
    """
    _check_options(task, coco_backend, letterbox_mode)
    data = data if isinstance(data, dict) else load_data_config(data)
    split = _split(data, task)
    training = model is not None
    if training:
        device, half = _given_model(model)
    else:
        model, device, half, letterbox_mode = _load(weights, cfg, device, imgsz, half, letterbox_mode)
    names = _class_names(data, single_cls)
    _check_nc(model, weights, len(names), data, single_cls)
    if dataloader is None:
        stride = int(max(getattr(model, "stride", torch.tensor([32.0])).max(), 32))
        dataloader = build_loader(data, split, imgsz, batch_size, stride, workers, letterbox_mode or "center")
    dataset = dataloader.dataset
    if len(dataset) == 0:
        raise ValueError(f"{data.get('yaml_file', 'data')}: the '{split}' split has no usable images")
    if not training or save_json:
        save_dir = Path(save_dir) if save_dir is not None else increment_path(Path(project) / name, exist_ok)
        save_dir.mkdir(parents=True, exist_ok=True)

    evaluate = task != "speed"
    gt, image_ids, category_ids = ground_truth(data, split, dataset, names, single_cls) if evaluate \
        else (None, coco_eval.image_ids_for(dataset.im_files), coco_eval.category_ids_for(names))
    setup = _Setup(conf_thres, iou_thres, max_det, single_cls,
                   getattr(dataset, "letterbox_mode", letterbox_mode or "center"), dataset.labels,
                   {f: i for i, f in enumerate(dataset.im_files)}, dict(zip(dataset.im_files, image_ids)),
                   category_ids, compute_loss)
    state = _Loop(len(names), device, half)
    desc = ("{:>22}" + "{:>11}" * 6).format(*HEADER)
    for batch in tqdm(dataloader, desc=desc, bar_format="{l_bar}{bar:10}{r_bar}"):
        state.batch(model, *batch, setup)

    coco = _coco_metrics(gt, state.jdict, image_ids, category_ids, coco_backend, verbose) if evaluate else None
    metrics, times = state.metrics(), state.times_ms()
    _print_results(names, metrics, coco, state, times, verbose, classwise, training, len(dataset))
    _save(save_dir, state.jdict if save_json else None, None if training else coco, names)
    if plots and save_dir is not None and state.first is not None:
        _plot_first_batch(state.first, Path(save_dir), names)
    mp, mr = (float(metrics.p.mean()), float(metrics.r.mean())) if metrics is not None else (0.0, 0.0)
    map50, map_ = (float(coco.stats[1]), float(coco.stats[0])) if coco else (0.0, 0.0)
    return (mp, mr, map50, map_, *state.loss_mean()), _class_maps(coco, len(names)), times


def _plot_first_batch(first, save_dir: Path, names) -> None:
    """val_batch0_labels.jpg and val_batch0_pred.jpg: the same images with ground truth and predictions."""
    from utils.plots import plot_images

    images, targets, dets, paths = first
    plot_images(images, targets, paths, save_dir / "val_batch0_labels.jpg", names)
    rows = [torch.cat((torch.full((len(d), 1), float(i)), d[:, 5:6], d[:, :5]), 1) for i, d in enumerate(dets)]
    preds = torch.cat(rows) if rows else torch.zeros(0, 7)  # [K, 7] (img, cls, x1, y1, x2, y2, score)
    plot_images(images, preds, paths, save_dir / "val_batch0_pred.jpg", names)


def _check_options(task, coco_backend, letterbox_mode) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if coco_backend not in coco_eval.BACKENDS:
        raise ValueError(f"coco_backend must be one of {coco_eval.BACKENDS}, got {coco_backend!r}")
    if letterbox_mode is not None and letterbox_mode not in LETTERBOX_MODES:
        raise ValueError(f"letterbox_mode must be one of {LETTERBOX_MODES}, got {letterbox_mode!r}")


def _given_model(model):
    """(device, half) of the trainer's model; its dtype decides the input's (no conversion of it here)."""
    if getattr(model, "training", False):
        raise ValueError("val.run: pass the model in eval mode (model.eval()); it returns the decoded output then")
    param = next(model.parameters(), None) if hasattr(model, "parameters") else None
    if param is None:
        return torch.device("cpu"), False
    return param.device, param.dtype == torch.float16


def _load(weights, cfg, device, imgsz, half, letterbox_mode):
    """(model, device, half, letterbox mode) for standalone evaluation."""
    if weights is None:
        raise ValueError("val.run needs weights (or a model)")
    device = select_device(device)
    model, official = load_weights(weights, cfg, device, imgsz)
    half = half and device.type != "cpu" and isinstance(model, torch.nn.Module)
    if half:
        model.half()
    return model, device, half, letterbox_mode or ("topleft" if official else "center")


def _class_maps(coco, nc: int) -> np.ndarray:
    """[nc] AP50-95 per class; classes without ground truth get the overall mAP (as YOLOv5)."""
    maps = np.zeros(nc) + (coco.stats[0] if coco else 0.0)
    if coco is not None:
        valid = ~np.isnan(coco.class_ap)
        maps[valid] = coco.class_ap[valid]
    return maps


def _save(save_dir, jdict, coco, names) -> None:
    """predictions.json (COCO results format) and results.txt (COCOeval summary and per-class table)."""
    if jdict is not None and save_dir is not None:
        f = Path(save_dir) / "predictions.json"
        f.write_text(json.dumps(jdict))
        print(f"predictions saved to {f} ({len(jdict)} detections)")
    if coco is not None and save_dir is not None:
        table = coco_eval.classwise_table(names, coco.class_ap)
        (Path(save_dir) / "results.txt").write_text(f"{coco.summary}\n\n{table}\n")


def _class_names(data: dict, single_cls: bool) -> list[str]:
    names = list(data["names"])
    return (names if len(names) == 1 else ["item"]) if single_cls else names


def _check_nc(model, weights, nc: int, data: dict, single_cls: bool) -> None:
    model_nc = getattr(model, "nc", None)
    if model_nc is not None and not single_cls and model_nc != nc:
        raise ValueError(f"{weights or 'the model'} predicts {model_nc} classes but "
                         f"{data.get('yaml_file', 'the data')} names {nc}: weights and --data do not belong together")


class _Loop:
    """What the batch loop accumulates: matches for P/R, COCO rows, losses, times."""

    def __init__(self, nc: int, device, half: bool):
        self.nc, self.device, self.half = nc, device, half
        self.stats = []  # per image: (correct [K, 10], score [K], class [K], label classes [M])
        self.jdict = []  # COCO result rows
        self.loss = torch.zeros(N_LOSS_ITEMS)
        self.n_batches = self.seen = 0
        self.dt = [0.0, 0.0, 0.0]  # seconds: pre-process, inference, NMS
        self.shape = None  # the first batch's input shape
        self.first = None  # the first batch (images, targets, detections in input pixels, paths) for plots

    def batch(self, model, images, targets, paths, shapes, s: _Setup):
        t0 = self._clock()
        im = images.to(self.device, non_blocking=True)
        im = im.half() if self.half else im.float()  # BGR 0-255, no /255: official YOLOX's input
        t1 = self._clock()
        out, raw = forward(model, im, with_raw=s.compute_loss is not None)
        t2 = self._clock()
        if out.shape[-1] != 5 + self.nc and not s.single_cls:
            raise ValueError(f"the model outputs {out.shape[-1] - 5} class scores per anchor, the data has {self.nc} classes")
        if raw is not None:
            self.loss += s.compute_loss(raw, targets.to(self.device))[1].float().cpu()
        dets = non_max_suppression(out.float(), s.conf_thres, s.iou_thres, agnostic=s.single_cls, max_det=s.max_det)
        t3 = self._clock()
        self.dt = [a + b for a, b in zip(self.dt, (t1 - t0, t2 - t1, t3 - t2))]
        self.n_batches += 1
        self.shape = self.shape or tuple(im.shape)
        if self.first is None:
            self.first = (images.cpu(), targets.cpu(), [d.detach().cpu() for d in dets], paths)
        for det, path, shape in zip(dets, paths, shapes):
            self._image(det, path, shape, tuple(im.shape[2:]), s)

    def _image(self, det, path, shape, input_hw, s: _Setup):
        self.seen += 1
        det = det.detach().cpu()
        if s.single_cls:
            det[:, 5] = 0
        det = torch.cat((to_original(det[:, :4], shape, input_hw, s.letterbox_mode), det[:, 4:]), 1)  # [K, 6] original px
        h0, w0 = shape[0]
        labels = _labels_xyxy(s.labels[s.index_of[path]], h0, w0)  # [M, 5] original pixels
        if s.single_cls:
            labels[:, 0] = 0
        self.stats.append((match_predictions(det, labels), det[:, 4], det[:, 5], labels[:, 0]))
        self.jdict += coco_eval.detections_to_coco(det, s.image_id_of[path], s.category_ids)

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
        return (self.loss / max(self.n_batches, 1)).tolist()


def _coco_metrics(gt, jdict, image_ids, category_ids, backend, verbose):
    if gt is None or not gt["annotations"]:
        LOGGER.warning("WARNING no ground-truth boxes in this split: COCO metrics skipped "
                       "(--save-json still writes the predictions)")
        return None
    return coco_eval.evaluate(gt, jdict, image_ids, category_ids, backend=backend, verbose=verbose)


def _print_results(names, metrics, coco, state, times, verbose, classwise, training, n_images):
    counts, images = state.target_counts()
    mp, mr = (metrics.p.mean(), metrics.r.mean()) if metrics is not None else (0.0, 0.0)
    map50, map_ = (coco.stats[1], coco.stats[0]) if coco else (0.0, 0.0)
    row = "{:>22}{:>11}{:>11}" + "{:>11.3g}" * 4
    print(row.format("all", n_images, int(counts.sum()), mp, mr, map50, map_))
    if verbose and len(names) > 1 and metrics is not None and coco is not None:
        p_of = dict(zip(metrics.classes.astype(int).tolist(), zip(metrics.p, metrics.r)))
        for c, name in enumerate(names):
            if counts[c]:
                p, r = p_of.get(c, (0.0, 0.0))
                print(row.format(name, int(images[c]), int(counts[c]), p, r, coco.class_ap50[c], coco.class_ap[c]))
    if not training:
        shape = state.shape or ()
        print(f"Speed: {times[0]:.1f}ms pre-process, {times[1]:.1f}ms inference, {times[2]:.1f}ms NMS per image "
              f"at shape {shape}")
    if coco is not None and (verbose or not training):
        print(coco.summary)
    if coco is not None and classwise:
        print(coco_eval.classwise_table(names, coco.class_ap))


# ---- command line -------------------------------------------------------------------------------------
def parse_opt(argv=None):
    parser = argparse.ArgumentParser(description="Evaluate a detector: COCO AP, per-class table, speed")
    parser.add_argument("--data", default="data/demo.yaml", help="dataset YAML")
    parser.add_argument("--weights", required=True, help="checkpoint (.pt), official YOLOX weights (.pth), .onnx or OpenVINO .xml")
    parser.add_argument("--cfg", default=None, help="model YAML for official weights (inferred when left out)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--img-size", "--imgsz", dest="imgsz", type=int, default=640, help="inference size (pixels)")
    parser.add_argument("--conf-thres", type=float, default=0.001)
    parser.add_argument("--iou-thres", type=float, default=0.65, help="NMS IoU threshold")
    parser.add_argument("--max-det", type=int, default=300, help="detections per image")
    parser.add_argument("--task", default="val", choices=TASKS, help="val, test, or speed (timing only)")
    parser.add_argument("--device", default="cpu", help="cpu, or CUDA device(s) 0 / 0,1 (the first one is used)")
    parser.add_argument("--workers", type=int, default=8, help="data loader workers")
    parser.add_argument("--single-cls", action="store_true", help="evaluate as one class")
    parser.add_argument("--half", action="store_true", help="FP16 inference (CUDA)")
    parser.add_argument("--save-json", action="store_true", help="write predictions.json (COCO results format)")
    parser.add_argument("--classwise", action="store_true", help="print the per-class AP table")
    parser.add_argument("--verbose", action="store_true", help="P, R, AP per class; COCOeval's messages")
    parser.add_argument("--project", default="runs/val")
    parser.add_argument("--name", default="exp")
    parser.add_argument("--exist-ok", action="store_true", help="reuse runs/val/<name> instead of numbering a new one")
    parser.add_argument("--coco-backend", default="pycocotools", choices=coco_eval.BACKENDS,
                        help="pycocotools, or faster (the faster-coco-eval package)")
    parser.add_argument("--letterbox", default=None, choices=LETTERBOX_MODES,
                        help="preprocessing; default topleft for official YOLOX .pth weights, center otherwise")
    return parser.parse_args(argv)


def main(argv=None):
    opt = parse_opt(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    kwargs = {k: v for k, v in vars(opt).items() if k != "letterbox"}
    return run(**kwargs, letterbox_mode=opt.letterbox)


if __name__ == "__main__":
    main()
