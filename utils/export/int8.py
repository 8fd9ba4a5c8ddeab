"""8-bit ONNX: static QDQ quantisation calibrated on real images, and its measured cost.

    images = calibration_images("data/demo.yaml", n=100, imgsz=(640, 640), letterbox_mode="center")
    quantize_int8("m.onnx", "m.int8.onnx", images, batch_size=1)
    held = calibration_images("data/demo.yaml", 8, (640, 640), split="val", purpose="int8 check")
    print(compare_int8("m.onnx", "m.int8.onnx", held, fmt).text())   # fmt: the export's OutputFormat

Calibration uses N images of the dataset, letterboxed exactly as the model sees them (BGR 0-255,
float, no normalisation), not random noise: activation ranges come from real data. Quantisation is
onnxruntime's ``quantize_static`` in QDQ format (QuantizeLinear/DequantizeLinear pairs around each
op, the form NPU converters and TensorRT read), int8 weights per output channel, int8 activations,
MinMax calibration (or the 99.99th percentile of |x|, ``calib_method="percentile"``); per-channel QDQ needs opset 13, so a file of a lower opset is converted for
quantisation (the float32 file keeps its opset). The head's decoding in the graph (split and decoded
layouts) stays in float: quantised, it gives box pixels and probabilities one 8-bit scale and the scores
round to zero (utils/quant/decode_tail.py). The report compares int8 with fp32 on held images: per output
max |diff| and cosine similarity, the decoded boxes (pixels) and scores, and the share of fp32's top-100
detections the int8 file finds again (utils/export/compare.py). The mAP of the int8 file is measured by
``python val.py --data <data> --weights m.int8.onnx``.
"""
from __future__ import annotations

import inspect
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from utils.data.augment import letterbox
from utils.export.compare import TOP_K, Agreement, batches, cosine, detection_agreement, detections, max_abs, max_diff
from utils.quant.decode_tail import decode_nodes
from utils.quant.uint8_activations import ACTIVATION_DTYPES, to_uint8_activations

LOGGER = logging.getLogger("yolox5.export")
# export.py --calib-method: how each activation's range comes from the calibration images. MinMax keeps every
# outlier; the percentile clips the rarest values for a finer grid (yoloxn on the demo set, QDQ as written,
# mAP50-95: fp32 0.381, MinMax 0.305, percentile 99.999 0.338, 99.99 0.364; onnxruntime's Entropy 0.305).
CALIB_METHODS = ("minmax", "percentile")
CALIB_PERCENTILE = 99.99


def calibration_images(data, n: int, imgsz: tuple[int, int], letterbox_mode: str = "center",
                       split: str = "train", purpose: str = "calibration") -> np.ndarray:
    """[n, 3, H, W] float32 BGR 0-255: the first n readable images of ``split`` of the dataset yaml,
    letterboxed to imgsz (h, w). Unreadable images are named, counted and skipped."""
    from utils.data.dataset_yaml import load_data_config
    from utils.data.datasets import list_images

    if int(n) < 1:
        raise ValueError(f"--calib-images must be >= 1, got {n}")
    cfg = data if isinstance(data, dict) else load_data_config(data)
    source = cfg.get(split) or cfg.get("val")
    if not source:
        raise ValueError(f"{cfg.get('yaml_file', data)}: no '{split}' (or 'val') images for {purpose}")
    files = list_images(source)
    out, skipped = [], 0
    for f in files:
        im = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if im is None:
            LOGGER.warning(f"{purpose}: cannot read {f}; skipped")
            skipped += 1
            continue
        im, _, _ = letterbox(im, imgsz, mode=letterbox_mode, scaleup=True)
        out.append(im.transpose(2, 0, 1).astype(np.float32))  # HWC BGR -> CHW
        if len(out) == n:
            break
    if not out:
        raise ValueError(f"{purpose}: no readable image in {source}")
    if len(out) < n:
        LOGGER.warning(f"{purpose}: {len(out)} images found in {source}, fewer than the {n} asked for")
    LOGGER.info(f"{purpose}: {len(out)} images from {source} ({skipped} unreadable, skipped), "
                f"letterboxed ({letterbox_mode}) to {imgsz[0]}x{imgsz[1]}")
    return np.stack(out)


PER_CHANNEL_OPSET = 13  # QuantizeLinear / DequantizeLinear take an axis from opset 13


def _opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


class _QuietPreprocessHint(logging.Filter):
    """Drops onnxruntime's 'consider pre-processing before quantization' hint: its quant_pre_process
    (symbolic shape inference + optimisation) is optional, and fails on models it moves to external data."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage() and \
            "run pre-processing before quantization" not in record.getMessage()


BIAS_READERS = ("Conv", "ConvTranspose", "Gemm")  # ops whose third input is a bias onnxruntime quantises to int32


def own_biases(model) -> int:
    """Give every conv (or Gemm) a bias initializer of its own, in place; returns how many it got.

    torch.onnx writes identical parameters once and hands the other readers an Identity of it, and a freshly
    initialised model folds to all-zero biases, so most of its convs read a shared bias through an Identity.
    onnxruntime's quantiser quantises only a bias that is an initializer ('Expected bias ... to be an
    initializer'), and leaves such convs out of its int8 kernels: yoloxs_rslu at 256 px kept 66 of its 83
    convs in float, so a speed check on random weights looked slower than a trained model's file."""
    from onnx import numpy_helper

    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    aliases = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity" and n.input[0] in initializers}
    readers = Counter(name for n in graph.node for name in n.input)
    given = 0
    for i, node in enumerate(graph.node):
        if node.op_type not in BIAS_READERS or len(node.input) < 3:
            continue
        name = node.input[2]
        source = aliases.get(name, name)
        if source not in initializers or (name == source and readers[name] < 2):
            continue  # a float bias computed in the graph, or one already the conv's own
        own = numpy_helper.from_array(numpy_helper.to_array(initializers[source]), f"{source}.{node.name or i}")
        graph.initializer.append(own)
        node.input[2] = own.name
        readers[name] -= 1
        given += 1
    graph_outputs = {o.name for o in graph.output}
    unread = [n for n in graph.node if n.op_type == "Identity" and n.output[0] in aliases
              and readers[n.output[0]] == 0 and n.output[0] not in graph_outputs]
    for n in unread:
        graph.node.remove(n)
        readers[n.input[0]] -= 1
    for t in [t for t in graph.initializer if t.name in initializers and readers[t.name] <= 0]:
        graph.initializer.remove(t)
    return given


def quantize_int8(fp32_path, int8_path, images: np.ndarray | None, batch_size: int = 1, per_channel: bool = True,
                  exclude: Sequence[str] = (), only: Sequence[str] | None = None, calibration_cache=None,
                  float_decode: bool = True, activations: str = "int8", calib_method: str = "minmax") -> Path:
    """Static QDQ quantisation of ``fp32_path`` calibrated on ``images`` [n, 3, H, W]; returns int8_path.

    exclude: ONNX node names kept in float (onnxruntime's ``nodes_to_exclude``); only: quantise these nodes
    alone (``nodes_to_quantize``). float_decode: keep the head's decoding in float as well
    (utils/quant/decode_tail.py: quantised, it crushes the scores of the split and decoded layouts).
    calibration_cache: a JSON file of the calibrated ranges, written by the first call and read by later
    ones (onnxruntime >= 1.23; then ``images`` may be None), so variants of one model calibrate once; older
    onnxruntime calibrates every call on ``images``. calib_method: one of CALIB_METHODS. activations: "uint8" rewrites the activation grids as uint8
    (utils/quant/uint8_activations.py: the same arithmetic, onnxruntime's fast kernels on x86)."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class _Reader(CalibrationDataReader):
        def __init__(self, input_name: str):
            self.feeds = iter([{input_name: b} for b in batches(images, batch_size)])

        def get_next(self):
            return next(self.feeds, None)

    import onnx

    if activations not in ACTIVATION_DTYPES:
        raise ValueError(f"int8: activations must be one of {ACTIVATION_DTYPES}, got {activations!r}")
    if calib_method not in CALIB_METHODS:
        raise ValueError(f"int8: calib_method must be one of {CALIB_METHODS}, got {calib_method!r}")
    percentile = calib_method == "percentile"
    model = onnx.load(str(fp32_path))
    input_name = model.graph.input[0].name
    decoding = decode_nodes(model) if float_decode else []
    chosen = [n for n in dict.fromkeys(exclude) if n not in decoding]  # the caller's, besides the decoding
    exclude = [*decoding, *chosen]
    int8_path = Path(int8_path)
    source = model
    own_biases(source)
    if per_channel and _opset(model) < PER_CHANNEL_OPSET:  # per-channel QDQ (an axis) is opset 13
        source = onnx.version_converter.convert_version(model, PER_CHANNEL_OPSET)
        LOGGER.info(f"int8: per-channel weights need opset {PER_CHANNEL_OPSET}: the int8 file is converted from "
                    f"opset {_opset(model)} (the float32 file keeps it)")
    cache = {"calibration_cache_path": calibration_cache} if calibration_cache is not None and \
        "calibration_cache_path" in inspect.signature(quantize_static).parameters else {}  # onnxruntime >= 1.23
    cached = bool(cache) and Path(calibration_cache).is_file()
    if images is None and not cached:
        raise ValueError("int8: calibration needs images (an existing calibration cache needs onnxruntime >= 1.23)")
    quiet = _QuietPreprocessHint()
    logging.getLogger().addFilter(quiet)
    try:
        quantize_static(source, str(int8_path), None if cached else _Reader(input_name), quant_format=QuantFormat.QDQ,
                        per_channel=per_channel, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.Percentile if percentile else CalibrationMethod.MinMax,
                        extra_options={"CalibPercentile": CALIB_PERCENTILE} if percentile else None,
                        nodes_to_exclude=list(exclude) or None,
                        nodes_to_quantize=list(only) if only is not None else None, **cache)
    finally:
        logging.getLogger().removeFilter(quiet)
    quantized = onnx.load(str(int8_path))  # keep the fp32 file's metadata, and say it is int8
    del quantized.metadata_props[:]
    for p in model.metadata_props:
        quantized.metadata_props.add(key=p.key, value=p.value)
    ranges = f"ranges from {Path(calibration_cache).name}" if cached else f"{len(images)} calibration images"
    method = f"percentile {CALIB_PERCENTILE}" if percentile else "MinMax"
    what = f"int8 QDQ (onnxruntime quantize_static, {method}, {ranges})"
    if decoding:
        what += f", decoding ({len(decoding)} nodes) in float"
    if chosen:
        what += f", {len(chosen)} more nodes kept in float"
    if only is not None:
        what += f", only {len(only)} nodes quantised"
    if activations == "uint8":
        to_uint8_activations(quantized)
        what += ", activations as uint8"
    quantized.metadata_props.add(key="quantization", value=what)
    onnx.save(quantized, str(int8_path))
    return int8_path


@dataclass
class Int8Comparison:
    path: Path
    n_images: int
    lines: list = field(default_factory=list)  # (name, max |diff|, value range, cosine)
    source: str = "images"
    agreement: Agreement | None = None  # fp32's top-100 detections found again by int8

    def text(self) -> str:
        out = [f"int8 vs fp32 ({self.path.name}, onnxruntime CPU, {self.n_images} {self.source}):"]
        out += [f"    {n:<22} max |diff| {d:.4g} (values up to {r:.4g}), cosine {c:.5f}" for n, d, r, c in self.lines]
        if self.agreement is not None:
            out.append(self.agreement.line("fp32", "the int8 file"))
        return "\n".join(out)


def compare_int8(fp32_path, int8_path, images: np.ndarray, fmt, batch_size: int = 1) -> Int8Comparison:
    """Run both files on ``images`` and compare every output, and (except nms) decoded boxes and scores.
    fmt: the OutputFormat of both files (utils/infer/outputs.py)."""
    from utils.export.verify import boxes_scores, ort_session

    fp32, int8 = ort_session(fp32_path), ort_session(int8_path)
    name = fp32.get_inputs()[0].name
    a_all, b_all = [], []
    for batch in batches(images, batch_size):
        a_all.append(fp32.run(None, {name: batch}))
        b_all.append(int8.run(None, {name: batch}))
    result = Int8Comparison(Path(int8_path), len(images))
    outs_a = [np.concatenate([o[k] for o in a_all]) for k in range(len(fmt.names))]
    outs_b = [np.concatenate([o[k] for o in b_all]) for k in range(len(fmt.names))]
    for n, a, b in zip(fmt.names, outs_a, outs_b):
        result.lines.append((n, max_diff(a, b), max_abs(a), cosine(a, b)))
    if fmt.layout != "nms":
        (box_a, score_a), (box_b, score_b) = (boxes_scores(fmt.decode(o)) for o in (outs_a, outs_b))
        for n, a, b in (("decoded boxes (px)", box_a, box_b), ("decoded scores", score_a, score_b)):
            result.lines.append((n, max_diff(a, b), max_abs(a), cosine(a.numpy(), b.numpy())))
    result.agreement = detection_agreement(detections(outs_a, fmt, max_det=TOP_K), detections(outs_b, fmt))
    return result
