"""Builders shared by the tests and the benchmarks: small models, random head outputs and targets, tiny
generated datasets, free ports. Everything is made here from seeds; nothing is downloaded.

Official YOLOX as a reference lives in tests/reference.py, the per-image SimOTA reference in
tests/simota_reference.py.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
import yaml
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
STRIDES = [8, 16, 32]
EXPORT_SIZE, EXPORT_NC = 160, 3  # the export tests' input side and classes (varied_model's defaults)


# ---- models ------------------------------------------------------------------------------------------
def tiny_detect_model(nc: int):
    """A three-level model of plain stride-2 convs ending in DetectX (strides 8, 16, 32): fast to build,
    for loss and assignment tests that feed their own head outputs."""
    from models.yolo import Model

    cfg = {"nc": nc, "depth_multiple": 0.33, "width_multiple": 0.25,
           "backbone": [[-1, 1, "Conv", [16, 3, 2]], [-1, 1, "Conv", [16, 3, 2]], [-1, 1, "Conv", [16, 3, 2]],
                        [-1, 1, "Conv", [16, 3, 2]], [-1, 1, "Conv", [16, 3, 2]]],
           "head": [[2, 1, "Conv", [16, 1, 1]], [2, 1, "Conv", [16, 1, 1]], [3, 1, "Conv", [16, 1, 1]],
                    [3, 1, "Conv", [16, 1, 1]], [4, 1, "Conv", [16, 1, 1]], [4, 1, "Conv", [16, 1, 1]],
                    [[5, 6, 7, 8, 9, 10], 1, "DetectX", ["nc", 1]]]}
    return Model(cfg)


def varied_model(cfg, nc: int = EXPORT_NC, size: int = EXPORT_SIZE):
    """A random model with varied outputs: BatchNorm statistics from one train-mode pass over random
    images (a fresh model's features vanish), prediction convs scaled to give logits of order 1."""
    from models.yolo import Model

    torch.manual_seed(0)
    model = Model(cfg, nc=nc)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        model.train()(torch.rand(2, 3, size, size) * 255)
    d = model.detect
    for conv, std in [(c, 0.01) for c in list(d.cls_preds) + list(d.obj_preds)] + [(c, 0.003) for c in d.reg_preds]:
        nn.init.normal_(conv.weight, std=std)
        nn.init.normal_(conv.bias, std=0.5)
    return model.eval()


@torch.no_grad()
def power_of_two_grids(qat: nn.Module) -> nn.Module:
    """Moves every 8-bit grid of a QAT model to a power-of-two scale: each activation range widened to the
    next one (its zero point an integer), each conv's weights rounded per output channel onto one (the
    channel's largest |w| then exactly 127 steps). A conv then sums integers times one power of two, which
    float32 holds exactly in any order, so torch and onnxruntime agree bit for bit whatever their thread
    counts; with arbitrary scales a one-step flip at a near-tie (summation order) grows through a deep
    model. Only the float functions (sigmoid, exp) may still differ by their own rounding."""
    import math

    from utils.quant.fake_quant import WEIGHT_QMAX, ActivationQuantizer
    from utils.quant.prepare import QuantConv2d

    for q in qat.modules():
        if isinstance(q, ActivationQuantizer):
            levels = q.scheme.qmax - q.scheme.qmin
            step = 2.0 ** math.ceil(math.log2(float(q.scheme.scale_zero_point(q.lo, q.hi)[0])))
            lo = -step * levels / 2 if q.scheme.symmetric else math.floor(min(float(q.lo), 0.0) / step) * step
            q.lo.fill_(lo)
            q.hi.fill_(lo + step * levels)
    for conv in qat.modules():
        if isinstance(conv, QuantConv2d):
            w = conv.weight.flatten(1)  # [C_out, C_in * k * k]
            step = torch.exp2(torch.ceil(torch.log2(w.abs().amax(1).clamp(min=1e-30) / WEIGHT_QMAX)))[:, None]
            w = torch.round(w / step).clamp(-WEIGHT_QMAX, WEIGHT_QMAX)
            rows, top = torch.arange(len(w)), w.abs().argmax(1)
            w[rows, top] = torch.where(w[rows, top] < 0, -WEIGHT_QMAX, WEIGHT_QMAX).to(w.dtype)
            conv.weight.copy_((w * step).view_as(conv.weight))
    return qat


def random_model(nc: int = 8, size: int = 128):
    """A random yoloxn with small, varied predictions. A fresh one scores every anchor alike: with
    BatchNorm's initial statistics its features vanish. One pass in train mode over random images
    sets the statistics; small random prediction convs then give logits of order 1."""
    from models.yolo import Model

    torch.manual_seed(0)
    model = Model("models/yoloxn.yaml", nc=nc)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average: one pass sets the statistics
    with torch.no_grad():
        model.train()(torch.rand(4, 3, size, size) * 255)
    d = model.detect
    for conv, std in [(c, 0.003) for c in list(d.cls_preds) + list(d.obj_preds)] + [(c, 0.0015) for c in d.reg_preds]:
        nn.init.normal_(conv.weight, std=std)
        nn.init.zeros_(conv.bias)
    return model.eval()


def image_batch(n: int = 1, size: int = EXPORT_SIZE, seed: int = 1) -> torch.Tensor:
    """[n, 3, size, size] random BGR 0-255 float images."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 255


def ort_decoded(path, x: torch.Tensor) -> torch.Tensor:
    """An exported file's outputs for x through onnxruntime and the shared post-processing (the eval output),
    as val.py and detect.py read them."""
    from utils.infer.outputs import decode_onnx_outputs
    from utils.export.verify import ort_session, run_onnx

    session = ort_session(path)
    return decode_onnx_outputs(run_onnx(session, x), session.get_modelmeta().custom_metadata_map)


# ---- head outputs and targets ------------------------------------------------------------------------
def random_preds(batch: int, nc: int, h: int = 256, w: int = 320, seed: int = 0, spread: float = 0.5):
    """Random raw YOLOX head outputs per level [B, 5 + nc, h / s, w / s]: boxes near their anchors, sizes
    around a few strides, scores mostly low."""
    g = torch.Generator().manual_seed(seed)
    preds = []
    for s in STRIDES:
        p = torch.randn(batch, 5 + nc, h // s, w // s, generator=g)
        p[:, :2] = p[:, :2] * spread + 0.5
        p[:, 2:4] = p[:, 2:4] * spread + 1.0
        p[:, 4:] = p[:, 4:] * 2 - 2
        preds.append(p)
    return preds


def random_targets(counts, nc: int, seed: int = 0, min_side: float = 0.01, max_side: float = 0.5,
                   outside: bool = False) -> torch.Tensor:
    """[M, 6] normalised targets (image, class, cx, cy, w, h) with counts[b] GTs in image b."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for b, n in enumerate(counts):
        if n == 0:
            continue
        wh = min_side + torch.rand(n, 2, generator=g) * (max_side - min_side)
        lo = -0.2 if outside else 0.0
        xy = lo + torch.rand(n, 2, generator=g) * (1 - 2 * lo)
        if not outside:  # centres inside the image, as clipped labels have them
            xy = xy.clamp(0.001, 0.999)
        cls = torch.randint(0, nc, (n, 1), generator=g).float()
        rows.append(torch.cat((torch.full((n, 1), float(b)), cls, xy, wh), 1))
    return torch.cat(rows) if rows else torch.zeros(0, 6)


# Batches of GTs per image that exercise the assigners' corners: name -> random_targets arguments.
ASSIGNMENT_CASES = {
    "one_gt": dict(counts=[1, 0]),
    "zero_gts": dict(counts=[0, 0]),
    "mixed_empty": dict(counts=[0, 7, 0, 3]),
    "crowded_200": dict(counts=[200, 5]),
    "smaller_than_stride": dict(counts=[12, 9], min_side=0.002, max_side=0.02),
    "huge_boxes": dict(counts=[4, 6], min_side=0.8, max_side=1.6),
    "partly_outside": dict(counts=[10, 10], max_side=0.6, outside=True),
    "many": dict(counts=[30, 20, 10]),
}


def case_inputs(case: str, nc: int, seed: int):
    """(preds, targets) of an ASSIGNMENT_CASES entry."""
    spec = dict(ASSIGNMENT_CASES[case])
    counts = spec.pop("counts")
    return random_preds(len(counts), nc, seed=seed), random_targets(counts, nc, seed=seed + 1, **spec)


# ---- data ------------------------------------------------------------------------------------------
def write_demo_dataset(root, seed: int = 2, n_train: int = 16, n_val: int = 4, img_size=(64, 64),
                       val_json: bool = True, **yaml_keys) -> Path:
    """A generated demo dataset under root/ds and its dataset yaml root/data.yaml (returned)."""
    from utils.data.demo import DEMO_NAMES, generate_demo_dataset

    root = Path(root)
    generate_demo_dataset(root / "ds", seed=seed, n_train=n_train, n_val=n_val, img_size=img_size, progress=False)
    data = {"path": str(root / "ds"), "train": "images/train", "val": "images/val", "names": list(DEMO_NAMES),
            **({"val_json": "annotations/instances_val.json"} if val_json else {}), **yaml_keys}
    path = root / "data.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# ---- processes -------------------------------------------------------------------------------------
def free_port() -> int:
    """A TCP port nothing listens on now (for DDP rendezvous in tests run side by side)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_train(args, cwd=ROOT, timeout: int = 300) -> subprocess.CompletedProcess:
    """python train.py *args, output captured."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def train_args(data, project, name, epochs: int = 2) -> list[str]:
    """A quick CPU run of yoloxn at 64 px, batch 8, on ``data`` (tiny_data)."""
    return ["--data", str(data), "--cfg", "models/yoloxn.yaml", "--img-size", "64", "--batch-size", "8",
            "--epochs", str(epochs), "--workers", "0", "--device", "cpu", "--project", str(project), "--name", name]


def losses_on_fixed_batch(model, tiny_data, steps: int, lr: float = 0.01) -> list[float]:
    """The training loss of ``steps`` SGD steps on the first batch (8 images at 64 px) of the tiny demo
    set, with the loss the model's head declares."""
    from utils.data.datasets import create_dataloader
    from utils.loss import build_loss
    from utils.train.optim import build_optimizer

    model.train()
    loader, _ = create_dataloader(str(tiny_data.parent / "ds" / "images" / "train"), 64, 8, 32, nc=model.nc, workers=0)
    images, targets, _, _ = next(iter(loader))
    loss_fn = build_loss(model, {})
    opt = build_optimizer(model, lr, 0.9, 5e-4)
    losses = []
    for _ in range(steps):
        loss, _ = loss_fn(model(images.float()), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses
