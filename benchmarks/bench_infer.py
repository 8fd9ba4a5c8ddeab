"""End-to-end inference latency (pre-process, inference, NMS) and val throughput, torch and onnxruntime,
beside official YOLOX's own pipeline.

    python -m benchmarks.bench_infer                          # yoloxs and yoloxs_rslu, random weights
    python -m benchmarks.bench_infer --weights a.pt b.pt      # trained checkpoints instead
    python -m benchmarks.bench_infer --runs 5 --no-val        # a quick look

Per model, batch 1 at --img (640), on a 640x480 photo-like image, median ms over --runs after warm-up:
  official YOLOX   yolox 0.3.0's ValTransform (resize + top-left pad + transpose), its model (BatchNorm
                   unfused, as its demo and evaluator run it) and its postprocess. torchvision cannot be
                   installed beside this torch, so its batched_nms is served by utils.infer.nms.batched_nms:
                   the post column is official's filtering/decoding around our NMS kernel.
  torch eager      our model as built, BatchNorm unfused, contiguous: the same network as official's
  torch deploy     what val.py / detect.py / Detector run: utils.infer.backends.load_weights (BatchNorm
                   folded, channels_last on CPU)
  onnxruntime      export.py's default ONNX (decoded [1, N, 5 + nc] output), run by onnxruntime
  ort --deploy     export.py --deploy (BN folded, per-level raw outputs, NPU layout); decoding those
                   outputs is counted in post, where our own post-processing does it
pre = letterbox + HWC->CHW + float tensor; post = (layout decoding +) NMS + boxes to original pixels.
The weights are random unless --weights is given: the head's prior (obj ~ 0.01) then puts every anchor
above the evaluation threshold, so post at --conf 0.001 is the worst case (8400 candidates), while
--conf 0.25 (deployment) leaves nothing. Trained weights give realistic NMS times.

Val throughput: val.py's run() over the demo val split (--val-images of them) at --img with batch
--val-batch, torch (load_weights) and onnxruntime; images/s of the whole call including COCOeval.
NMS alone at 8400 candidates and COCOeval per backend: python -m benchmarks.bench_nms.
Timings need an otherwise idle machine; the header and the last line print the load average.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from benchmarks import load_average, median_seconds
from models.weights import load_model
from models.yolo import Model
from models.yolox_official import project_to_official
from utils.data.augment import letterbox
from utils.checkpoints import save_checkpoint
from utils.data.demo import render_scene
from utils.infer.backends import load_weights, to_original
from utils.infer.nms import non_max_suppression

REPO = Path(__file__).resolve().parents[1]
def photo(seed: int = 0) -> np.ndarray:
    """A 640x480 BGR scene of the demo generator (shapes on textures): not random noise, so JPEG-like
    statistics do not matter and the pipeline sees a real image shape."""
    return render_scene(seed, "val", 0, (480, 640))[0]


def median_ms(fn, runs: int) -> float:
    return median_seconds(fn, runs, warmup=2) * 1e3


def checkpoint_for(name: str, weights: str | None, root: Path) -> Path:
    if weights:
        return Path(weights)
    torch.manual_seed(0)
    model = Model(REPO / "models" / f"{name}.yaml").eval()
    return save_checkpoint(root / f"{name}.pt", {"model": model.state_dict(), "yaml": model.yaml})


# ---- our pipeline -----------------------------------------------------------------------------
class Ours:
    """The Detector's steps, separately timed: letterbox (centred), model, NMS + mapping back."""

    def __init__(self, model, img: int, conf: float, iou: float):
        self.model, self.img, self.conf, self.iou = model, img, conf, iou

    def pre(self, im):
        padded, ratio, pad = letterbox(im, self.img, mode="center", auto=False)
        x = torch.from_numpy(np.ascontiguousarray(padded.transpose(2, 0, 1)))[None].float()
        return x, (im.shape[:2], ((ratio[1], ratio[0]), pad))

    @torch.no_grad()
    def infer(self, x):
        return self.model(x)

    def post(self, out, shape):
        det = non_max_suppression(out, self.conf, self.iou, max_det=300)[0]
        det[:, :4] = to_original(det[:, :4], shape, (self.img, self.img), "center")
        return det


class OrtDeploy(Ours):
    """onnxruntime on an --deploy file: raw per-level outputs; decoding them belongs to post."""

    def __init__(self, path, img, conf, iou):
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.meta = self.session.get_modelmeta().custom_metadata_map
        self.name = self.session.get_inputs()[0].name
        super().__init__(None, img, conf, iou)

    def infer(self, x):
        return self.session.run(None, {self.name: x.numpy()})

    def post(self, out, shape):
        from utils.infer.outputs import decode_onnx_outputs

        return super().post(decode_onnx_outputs(out, self.meta), shape)


class Official:
    """official YOLOX: ValTransform, the unfused model, postprocess (NMS kernel: ours, see the docstring)."""

    def __init__(self, model, img, conf, iou):
        from yolox.data.data_augment import ValTransform

        self.model, self.img, self.conf, self.iou = model, img, conf, iou
        self.transform = ValTransform(legacy=False)

    def pre(self, im):
        x, _ = self.transform(im, None, (self.img, self.img))
        return torch.from_numpy(x)[None].float(), min(self.img / im.shape[0], self.img / im.shape[1])

    @torch.no_grad()
    def infer(self, x):
        return self.model(x)

    def post(self, out, ratio):
        from yolox.utils import postprocess

        det = postprocess(out, self.model.head.num_classes, self.conf, self.iou, class_agnostic=False)[0]
        if det is not None:
            det[:, :4] /= ratio
        return det


def time_pipeline(pipe, im, runs: int) -> tuple[float, float, float, int]:
    x, shape = pipe.pre(im)
    out = pipe.infer(x)
    det = pipe.post(out, shape)
    pre = median_ms(lambda: pipe.pre(im), runs)
    inf = median_ms(lambda: pipe.infer(x), runs)
    post = median_ms(lambda: pipe.post(out, shape), runs)
    return pre, inf, post, 0 if det is None else len(det)


def official_model(name: str, ckpt: Path):
    """Official YOLOX of the same size holding the same weights (our state_dict keys are official's)."""
    from tests.reference import OFFICIAL_SIZES, build_official

    if name not in OFFICIAL_SIZES:  # e.g. yoloxs_rslu: no official twin
        return None
    ours = load_model(ckpt)
    model = build_official(name, nc=ours.nc)
    model.load_state_dict(project_to_official(ours.state_dict()))
    return model.eval()


def use_our_nms_for_torchvision() -> None:
    """The official postprocess calls torchvision.ops.batched_nms; torchvision cannot be installed here."""
    from tests.reference import install_torchvision_stub
    from utils.infer.nms import batched_nms

    install_torchvision_stub()
    ops = sys.modules["torchvision.ops"]
    if str(getattr(sys.modules["torchvision"], "__version__", "")).endswith("stub"):
        ops.batched_nms = lambda boxes, scores, idxs, iou: batched_nms(boxes, scores, idxs, iou)


# ---- main -------------------------------------------------------------------------------------
def latency_rows(name, ckpt, tmp: Path, args, im) -> list[tuple]:
    import export

    rows = []
    official = None
    if not args.no_official:
        try:
            use_our_nms_for_torchvision()
            official = official_model(name, ckpt)
        except ImportError as e:
            print(f"official yolox not importable ({e}); its row is skipped (tests/install_reference.sh installs it)")
    if official is not None:
        rows.append(("official YOLOX",) + time_pipeline(Official(official, args.img, args.conf, args.iou), im, args.runs))
    eager = load_model(ckpt).eval()  # unfused, contiguous: official's network
    rows.append(("torch eager",) + time_pipeline(Ours(eager, args.img, args.conf, args.iou), im, args.runs))
    deployed, _ = load_weights(ckpt, device=torch.device("cpu"), imgsz=args.img)
    rows.append(("torch deploy",) + time_pipeline(Ours(deployed, args.img, args.conf, args.iou), im, args.runs))
    onnx_path = export.run(weights=str(ckpt), img_size=args.img, opset=12, simplify=True, report=False,
                           output=str(tmp / f"{name}.onnx"))["onnx"]
    ort_model, _ = load_weights(onnx_path, imgsz=args.img)
    rows.append(("onnxruntime",) + time_pipeline(Ours(ort_model, args.img, args.conf, args.iou), im, args.runs))
    deploy_path = export.run(weights=str(ckpt), img_size=args.img, opset=12, simplify=True, deploy=True,
                             report=False, output=str(tmp / f"{name}.deploy.onnx"))["onnx"]
    rows.append(("ort --deploy",) + time_pipeline(OrtDeploy(deploy_path, args.img, args.conf, args.iou), im, args.runs))
    return rows


def val_rows(name, weights, tmp: Path, args) -> list[tuple]:
    """val.run on the demo val split with torch and with onnxruntime. Random weights get the demo's 8
    classes (val.py refuses a model whose nc differs from the data's)."""
    import export
    import val
    from utils.data.demo import DEMO_NAMES, ensure_demo_dataset

    root = ensure_demo_dataset(tmp / "demo", n_train=1, n_val=args.val_images)
    data = {"path": str(root), "train": str(root / "images" / "train"), "val": str(root / "images" / "val"),
            "val_json": str(root / "annotations" / "instances_val.json"), "nc": len(DEMO_NAMES),
            "names": list(DEMO_NAMES)}
    if weights is None:
        torch.manual_seed(0)
        model = Model(REPO / "models" / f"{name}.yaml", nc=len(DEMO_NAMES)).eval()
        weights = save_checkpoint(tmp / f"{name}.demo.pt", {"model": model.state_dict(), "yaml": model.yaml})
    onnx_path = export.run(weights=str(weights), img_size=args.img, opset=12, simplify=True, report=False,
                           output=str(tmp / f"{name}.demo.onnx"))["onnx"]
    rows = []
    for label, w in (("torch deploy", weights), ("onnxruntime", onnx_path)):
        t0 = time.perf_counter()
        _, _, times = val.run(data, weights=str(w), batch_size=args.val_batch, imgsz=args.img,
                              workers=0, project=str(tmp / "val"), exist_ok=True)
        seconds = time.perf_counter() - t0
        rows.append((label, args.val_images, seconds, args.val_images / seconds, *times))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["yoloxs", "yoloxs_rslu"], help="model yamls in models/")
    p.add_argument("--weights", nargs="+", default=None, help="checkpoints, one per --models entry")
    p.add_argument("--img", type=int, default=640)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--conf", type=float, default=0.25, help="score threshold of the latency rows")
    p.add_argument("--iou", type=float, default=0.45)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--val-images", type=int, default=50)
    p.add_argument("--val-batch", type=int, default=8)
    p.add_argument("--no-val", action="store_true")
    p.add_argument("--no-official", action="store_true")
    args = p.parse_args(argv)
    if args.weights and len(args.weights) != len(args.models):
        p.error("--weights needs one checkpoint per --models entry")
    if args.threads:
        torch.set_num_threads(args.threads)
    import onnxruntime as ort

    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime {ort.__version__}, "
          f"OpenCV {cv2.__version__}; img {args.img}, batch 1, conf {args.conf}, iou {args.iou}, "
          f"{args.runs} runs; weights: {'given' if args.weights else 'random'}; {load_average()}")
    im = photo()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        lat, vals = [], []
        for k, name in enumerate(args.models):
            ckpt = checkpoint_for(name, args.weights[k] if args.weights else None, tmp)
            lat += [(name,) + r for r in latency_rows(name, ckpt, tmp, args, im)]
            if not args.no_val:
                vals += [(name,) + r for r in val_rows(name, args.weights[k] if args.weights else None, tmp, args)]
    print("\nEnd-to-end latency per image, ms (median); ratio = official total / this total")
    print("| model | pipeline | pre | inference | post (NMS) | total | detections | vs official |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models:
        mine = [r for r in lat if r[0] == name]
        ref = next((sum(r[2:5]) for r in mine if r[1] == "official YOLOX"), None)
        for _, pipe, pre, inf, post, n in mine:
            total = pre + inf + post
            ratio = f"{ref / total:.2f}x" if ref else "-"
            print(f"| {name} | {pipe} | {pre:.1f} | {inf:.1f} | {post:.1f} | {total:.1f} | {n} | {ratio} |")
    if vals:
        print(f"\nval.py throughput on {args.val_images} demo val images at {args.img}, batch {args.val_batch} "
              "(the whole call: loading, inference, NMS, COCOeval)")
        print("| model | weights | images | s | images/s | pre ms/img | inference ms/img | NMS ms/img |")
        print("|---|---|---|---|---|---|---|---|")
        for name, label, n, s, ips, pre, inf, nms in vals:
            print(f"| {name} | {label} | {n} | {s:.1f} | {ips:.1f} | {pre:.1f} | {inf:.1f} | {nms:.1f} |")
    print(f"\nload average at the end: {load_average()}")


if __name__ == "__main__":
    main()
