"""Running a detector for inference: this project's checkpoints, official YOLOX weights, ONNX files or
OpenVINO IRs; the letterbox their weights expect; one forward that can also give the raw training
outputs; and boxes mapped back to original-image pixels. Shared by evaluation, detection and the Detector API."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from utils.boxes import clip_boxes_xyxy
from utils.data.augment import LETTERBOX_MODES

LOGGER = logging.getLogger("yolox5.inference")


class OnnxModel:
    """An ONNX file run by onnxruntime on CPU, called like the eval-mode model: images [B, 3, H, W]
    float (BGR 0-255) -> decoded [B, N, 5 + nc]."""

    def __init__(self, path, imgsz: int, as_written: bool = False):
        from utils.export.verify import ort_session

        self.path = Path(path)
        self.session = ort_session(path, as_written=as_written)  # as_written: a QDQ file's exact 8-bit arithmetic
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        if len(inp.shape) != 4:
            raise ValueError(f"{path}: the ONNX input '{inp.name}' has shape {inp.shape}; expected [B, 3, H, W] images")
        _, _, h, w = inp.shape  # ints, or names / None for dynamic axes
        if isinstance(h, int) and isinstance(w, int) and (h, w) != (imgsz, imgsz):
            raise ValueError(f"{path}: the ONNX input '{inp.name}' is {h}x{w} (h x w), but --img-size is {imgsz}; "
                             f"pass --img-size {h}" + ("" if h == w else " (or export it square)"))
        self.batch = inp.shape[0] if isinstance(inp.shape[0], int) else None  # fixed batch, or None
        self.dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        self.meta = self.session.get_modelmeta().custom_metadata_map  # export.py: layout, strides, names, nc
        out_width = self.session.get_outputs()[0].shape[-1]
        self.nc = int(self.meta["nc"]) if "nc" in self.meta else out_width - 5 if isinstance(out_width, int) else None
        self.names = _names_from_metadata(self.meta)
        self.stride = torch.tensor([32.0])

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.cpu().numpy().astype(self.dtype)
        if self.batch is None or self.batch == len(x):
            return torch.from_numpy(self._run(x)).float()
        outs = []  # a fixed batch size: run it in slices of that size, the last one padded
        for i in range(0, len(x), self.batch):
            part = x[i:i + self.batch]
            pad = np.zeros((self.batch - len(part), *part.shape[1:]), dtype=part.dtype)
            outs.append(self._run(np.concatenate((part, pad)))[:len(part)])
        return torch.from_numpy(np.concatenate(outs)).float()

    def _run(self, x: np.ndarray) -> np.ndarray:
        """The decoded [B, N, 5 + nc]; --deploy layouts (per-level, split) are decoded from the file's metadata."""
        from utils.infer.outputs import decode_onnx_outputs

        return decode_onnx_outputs(self.session.run(None, {self.input_name: x}), self.meta).numpy()


class OpenVinoModel(OnnxModel):
    """An OpenVINO IR (export.py --include openvino: m.xml + m.bin, float32 or NNCF int8) on OpenVINO's
    CPU runtime, called like OnnxModel; the IR carries export.py's metadata, so every layout decodes."""

    def __init__(self, path, imgsz: int):
        import json

        from utils.infer.openvino_runtime import openvino_runner, read_openvino_metadata, require_openvino

        require_openvino()
        self.path = Path(path)
        self.meta = read_openvino_metadata(path)
        if "outputs" not in self.meta:
            raise ValueError(f"{path}: not an IR written by export.py (no output names in its rt_info)")
        h, w = json.loads(self.meta["imgsz"]) if "imgsz" in self.meta else (imgsz, imgsz)
        if (h, w) != (imgsz, imgsz):
            raise ValueError(f"{path}: the IR's input is {h}x{w} (h x w), but --img-size is {imgsz}; pass --img-size {h}")
        batch = self.meta.get("batch", "1")
        self.batch = int(batch) if batch.isdigit() else None  # "dynamic": any batch
        self.dtype = np.float32
        self.nc = int(self.meta["nc"]) if "nc" in self.meta else None
        self.names = _names_from_metadata(self.meta)
        self.stride = torch.tensor([32.0])
        self._infer = openvino_runner(path, json.loads(self.meta["outputs"]))

    def _run(self, x: np.ndarray) -> np.ndarray:
        from utils.infer.outputs import decode_onnx_outputs

        return decode_onnx_outputs(self._infer(x), self.meta).numpy()


class DecodedRunner:
    """A converted model's run function (a batch [B, 3, H, W] numpy -> its outputs) called as val.py calls a
    model: images [B, 3, H, W] -> decoded [B, N, 5 + nc] through ``fmt`` (an OutputFormat), one image at a
    time (RKNN models in rknn-toolkit2's simulator have batch 1)."""

    training = False

    def __init__(self, run, fmt, nc: int):
        self.run, self.fmt, self.nc = run, fmt, nc

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().cpu().numpy()
        return torch.cat([self.fmt.decode(self.run(x[i:i + 1])) for i in range(len(x))])


def _names_from_metadata(meta: dict) -> list[str] | None:
    """Class names an exporter stored in the ONNX metadata ('names': a list or {index: name})."""
    import yaml

    try:
        names = yaml.safe_load(meta["names"]) if "names" in meta else None
    except yaml.YAMLError:
        return None
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    return [str(n) for n in names] if isinstance(names, list) else None


def load_weights(weights, cfg=None, device=torch.device("cpu"), imgsz: int = 640, qdq_exact: bool = False):
    """(model, letterbox): a torch model in eval mode (BatchNorm folded) or an OnnxModel / OpenVinoModel,
    and the letterbox its weights expect (letterbox_of). qdq_exact: an ONNX file runs as written, without
    onnxruntime's graph optimisation (a QDQ file's exact 8-bit arithmetic: utils/quant/cpu_int8.py)."""
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".onnx", ".xml"):
        runtime = "onnxruntime" if suffix == ".onnx" else "OpenVINO"
        if device.type != "cpu":
            LOGGER.warning(f"{path}: {suffix} files run with {runtime} on the CPU; --device {device} is not used")
        model = OnnxModel(path, imgsz, as_written=qdq_exact) if suffix == ".onnx" else OpenVinoModel(path, imgsz)
        return model, letterbox_of(model)
    if suffix == ".rknn":
        raise ValueError(f"{path}: RKNN files run on the Rockchip NPU (rknn-toolkit-lite2 on the board), not here; "
                         "export.py --include rknn prints the simulator's agreement with torch, and val.py can "
                         "evaluate the ONNX or int8 ONNX file the RKNN model was converted from")
    from models.weights import load_model

    model = load_model(path, cfg=cfg, device=device)
    # Inference only from here: BatchNorm folded into the convs, and NHWC on CPU (oneDNN's fast
    # layout); outputs equal to float rounding, 1.2-1.5x faster (python -m benchmarks.bench_infer).
    if hasattr(model, "fuse"):
        model.fuse()
    if device.type == "cpu":
        model.to(memory_format=torch.channels_last)
    return model, letterbox_of(model)


def letterbox_of(model) -> str:
    """The letterbox a model's weights expect: official YOLOX weights were trained on top-left letterboxed
    images (official preprocessing); an exported file says so in its metadata; anything else: centred."""
    meta = getattr(model, "meta", None) or {}
    if meta.get("letterbox") in LETTERBOX_MODES:
        return meta["letterbox"]
    return "topleft" if getattr(model, "official", False) else "center"


def forward(model, images: torch.Tensor, with_raw: bool = False):
    """(eval output [B, N, 5 + nc], raw training outputs per level or None).

    With with_raw a torch Model runs once: its layers up to the head, the head's raw training outputs
    (what the loss takes), and those decoded by the head exactly as its eval forward decodes
    (models/heads/base.py); BatchNorm stays in eval mode. Other models (ONNX, OpenVINO) give no raw outputs.
    """
    head = getattr(model, "detect", None) if with_raw and hasattr(model, "features") else None
    if head is None:
        return model(images), None
    raw = head.raw(model.features(images))
    return head.decode_raw(raw), raw


def detections_to_original(det: torch.Tensor, shape, input_hw, letterbox_mode: str) -> tuple[torch.Tensor, int]:
    """(detections a picture, a COCO json and a txt row can hold, how many were dropped).

    det [K, 6] (x1, y1, x2, y2, score, class) in input pixels -> original-image pixels (to_original), clipped
    to the image as YOLOv5's clip_boxes, without the rows whose box or score is not finite (a diverging model's).
    """
    h0, w0 = shape[0]
    finite = torch.isfinite(det[:, :5]).all(1)
    det = det[finite]
    boxes = clip_boxes_xyxy(to_original(det[:, :4], shape, input_hw, letterbox_mode), h0, w0)
    return torch.cat((boxes, det[:, 4:]), 1), int((~finite).sum())


def warn_dropped(count: int) -> None:
    """One warning for the detections detections_to_original left out of a whole run."""
    if count:
        LOGGER.warning(f"WARNING {count} detections with a non-finite box or score left out (a diverging model?)")


def to_original(boxes: torch.Tensor, shape, input_hw, letterbox_mode: str) -> torch.Tensor:
    """xyxy boxes [K, 4] in input pixels -> original-image pixels.

    shape: the loader's ((h0, w0), ((ratio_h, ratio_w), (pad_left, pad_top))). Top-left letterbox:
    divide by r = min(H / h0, W / w0), as official YOLOX's evaluator does; centred: undo the pad and
    the per-axis ratio.
    """
    (h0, w0), ((rh, rw), (left, top)) = shape
    boxes = boxes.clone()
    if letterbox_mode == "topleft":
        return boxes / min(input_hw[0] / h0, input_hw[1] / w0)
    boxes[:, [0, 2]] = (boxes[:, [0, 2]] - left) / rw
    boxes[:, [1, 3]] = (boxes[:, [1, 3]] - top) / rh
    return boxes
