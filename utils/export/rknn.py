"""RKNN models for Rockchip NPUs from our ONNX export, through rknn-toolkit2, run in its simulator.

    require_rknn()                                                   # a clear message when it is missing
    model = build_rknn("m.onnx", "m.int8.rknn", platform="rk3588", images=calibration, metadata=meta)
    outputs = model.run(batch)                                       # float32 [B, 3, H, W] BGR 0-255
    model.release()

rknn-toolkit2 converts the ONNX file export.py has just written and verified (``load_onnx``), quantises
it to int8 (``build(do_quantization=True, dataset=...)``, its default w8a8, per-channel weights) when
calibration images are given, float16 otherwise, writes the .rknn file (``export_rknn``) and runs the
built model in the toolkit's simulator (``init_runtime()`` without a target) for the comparison with
torch. The simulator only runs a model built in the same session, not one loaded from a .rknn file, so
``build_rknn`` returns the live model.

Input, channels and calibration data. Our models take BGR 0-255 float with no normalisation. rknn-toolkit2
computes (x - mean_values[c]) / std_values[c] for each input channel c in the order the channels arrive,
so mean 0 and std 1 for all three channels leave the input as it is. It never reorders the channels of
an array passed to ``inference()`` or of a .npy calibration file; only calibration image files (jpg,
png) are decoded as RGB, and flipped to BGR only with ``quant_img_RGB2BGR=True``. So the calibration
images go to rknn as .npy arrays of exactly the tensors the model sees (letterboxed BGR float,
utils/export_int8.calibration_images), [1, 3, H, W] as the ONNX input (rknn-toolkit2 2.5 rejects NHWC
.npy for an NCHW model), listed one path a line in dataset.txt: nothing for rknn to convert, and the
int8 ranges come from the same data as the int8 ONNX and OpenVINO models. On the board, feed the
letterboxed BGR image (uint8, NHWC, as cv2 gives it) without scaling.

rknn-toolkit2 is optional and pins old versions of torch (<= 2.4), numpy (<= 1.26) and onnx (<= 1.18):
install it in its own virtual environment (README, "OpenVINO and RKNN").
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import tempfile
from pathlib import Path

import numpy as np

INSTALL = ('pip install rknn-toolkit2 (or pip install -e ".[rknn]"), in a separate virtual environment: it pins '
           'torch<=2.4, numpy<=1.26 and onnx<=1.18')
PLATFORMS = ("rk3588", "rk3576", "rk3568", "rk3566", "rk3562", "rk2118", "rv1126b", "rv1106", "rv1106b", "rv1103",
             "rv1103b")  # rknn-toolkit2 2.5's target_platform values
MEAN, STD = [[0.0, 0.0, 0.0]], [[1.0, 1.0, 1.0]]  # BGR 0-255 in, no normalisation (see the module doc)
META_KEYS = ("exporter", "yaml", "stride", "nc", "imgsz", "layout", "letterbox")  # short: custom_string is small


def require_rknn() -> None:
    """Raise ImportError naming what to install when rknn-toolkit2 cannot be imported."""
    try:
        importlib.import_module("rknn.api")
    except ImportError as e:
        raise ImportError(f"--include rknn needs rknn-toolkit2 ({e}): install it with {INSTALL}") from None
    if importlib.util.find_spec("pkg_resources") is None:  # rknn-toolkit2 2.5 imports it when RKNN() starts
        raise ImportError("rknn-toolkit2 imports pkg_resources, which setuptools >= 81 no longer has: "
                          "pip install 'setuptools<81'")


def check_platform(platform: str) -> str:
    platform = str(platform).lower()
    if platform not in PLATFORMS:
        raise ValueError(f"--rknn-platform must be one of {', '.join(PLATFORMS)}, got {platform!r}")
    return platform


class RknnError(RuntimeError):
    """A step of rknn-toolkit2 failed (its own log, printed above, says why)."""


def _check(ret, step: str, path) -> None:
    if ret != 0:
        raise RknnError(f"{path}: rknn-toolkit2 {step} failed (returned {ret}); its log above says why")


def _write_dataset(images: np.ndarray, folder: Path) -> Path:
    """One .npy [1, 3, H, W] per image and dataset.txt listing them, as rknn's build(dataset=) reads."""
    lines = []
    for i, im in enumerate(images):
        f = folder / f"calib_{i:05d}.npy"
        np.save(f, np.ascontiguousarray(im[None], dtype=np.float32))  # NCHW BGR 0-255, as the ONNX input
        lines.append(str(f.resolve()))
    listing = folder / "dataset.txt"
    listing.write_text("\n".join(lines) + "\n")
    return listing


class RknnModel:
    """A built RKNN model with the simulator running: ``run(batch)`` gives its outputs as float32 arrays."""

    def __init__(self, rknn, path: Path, platform: str, quantized: bool, qat: bool = False):
        self.rknn, self.path, self.platform, self.quantized, self.qat = rknn, path, platform, quantized, qat

    @property
    def runtime(self) -> str:
        precision = "int8 (QAT ranges)" if self.qat else "int8" if self.quantized else "float16"
        return f"rknn-toolkit2 simulator, {self.platform}, {precision}"

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        outputs = self.rknn.inference(inputs=[np.ascontiguousarray(batch, dtype=np.float32)], data_format="nchw")
        if outputs is None:
            raise RknnError(f"{self.path}: the rknn simulator returned no outputs; its log above says why")
        return [np.asarray(o, dtype=np.float32) for o in outputs]  # int8 outputs come back dequantised

    def release(self) -> None:
        self.rknn.release()


def _config(platform: str, metadata: dict | None) -> dict:
    """rknn.config's arguments: BGR 0-255 in (no normalisation), w8a8 per-channel int8, our metadata."""
    custom = json.dumps({k: metadata[k] for k in META_KEYS if k in (metadata or {})}, separators=(",", ":"))
    return dict(mean_values=MEAN, std_values=STD, target_platform=platform, quantized_dtype="w8a8",
                quantized_algorithm="normal", quantized_method="channel", custom_string=custom)


def build_rknn(onnx_path, rknn_path, platform: str = "rk3588", images: np.ndarray | None = None,
               metadata: dict | None = None, qat: bool = False) -> RknnModel:
    """Convert ``onnx_path`` (static shape) for ``platform``, int8 calibrated on ``images`` [n, 3, H, W]
    (float16 when None), write ``rknn_path`` and start the simulator; returns the live model. ``qat``: the
    file is a QDQ model from quantisation-aware training: rknn-toolkit2 2.5 imports it as a "QAT model" and
    builds int8 from its QuantizeLinear / DequantizeLinear ranges, without calibration."""
    from rknn.api import RKNN

    platform, rknn_path = check_platform(platform), Path(rknn_path)
    rknn = RKNN(verbose=False)
    try:
        _check(rknn.config(**_config(platform, metadata)), "config", rknn_path)
        _check(rknn.load_onnx(model=str(onnx_path)), "load_onnx", onnx_path)
        if qat and images is not None:
            raise ValueError(f"{onnx_path}: a QAT model carries its own ranges; it is not calibrated again")
        with tempfile.TemporaryDirectory(prefix="rknn_calib_") as tmp:
            dataset = _write_dataset(images, Path(tmp)) if images is not None else None
            _check(rknn.build(do_quantization=images is not None, dataset=str(dataset) if dataset else None),
                   "build", rknn_path)
        _check(rknn.export_rknn(str(rknn_path)), "export_rknn", rknn_path)
        _check(rknn.init_runtime(), "init_runtime (simulator)", rknn_path)
    except BaseException:
        rknn.release()
        raise
    return RknnModel(rknn, rknn_path, platform, images is not None or qat, qat)


HYBRID_LOG = "Meet hybrid type"  # what rknn-toolkit2's compiler prints for each tensor it keeps in float16


def build_rknn_hybrid(onnx_path, rknn_path, platform: str, images: np.ndarray, float_nodes, metadata: dict | None = None):
    """int8 with the outputs of the ONNX nodes ``float_nodes`` kept in float16: rknn-toolkit2's hybrid
    quantisation (``hybrid_quantization_step1``, the layers written under ``custom_quantize_layers`` in the
    .quantization.cfg it writes, ``hybrid_quantization_step2``). rknn names those layers by their output
    tensors (a node name is refused as an invalid operand), and only tensors step 1 lists exist for it (a
    SiLU's Sigmoid output is fused away). Returns (live RknnModel, the float16 tensors, how many of them the
    compiler's log names as float16: "Meet hybrid type, dtype: float16, tensor: <name>"): the proof that the
    setting took effect (rknn-toolkit2 #360: a hybrid configuration that changed nothing)."""
    import os

    import onnx
    from rknn.api import RKNN

    platform, rknn_path = check_platform(platform), Path(rknn_path)
    wanted = {t for n in onnx.load(str(onnx_path)).graph.node if n.name in set(float_nodes) for t in n.output}
    config = _config(platform, metadata)
    stem, cwd = Path(onnx_path).stem, os.getcwd()
    with tempfile.TemporaryDirectory(prefix="rknn_hybrid_") as tmp:
        dataset = _write_dataset(images, Path(tmp))
        first = RKNN(verbose=False)  # step 2 refuses a session that has loaded a model: one session per step
        try:
            _check(first.config(**config), "config", rknn_path)
            _check(first.load_onnx(model=str(Path(onnx_path).resolve())), "load_onnx", onnx_path)
            os.chdir(tmp)  # step 1 writes <stem>.model, .data and .quantization.cfg into the working directory
            _check(first.hybrid_quantization_step1(dataset=str(dataset), proposal=False), "hybrid_quantization_step1",
                   rknn_path)
        finally:
            os.chdir(cwd)
            first.release()
        cfg = Path(tmp) / f"{stem}.quantization.cfg"
        tensors = [t for t in _cfg_tensors(cfg) if t in wanted]
        _write_custom_layers(cfg, tensors)
        rknn = RKNN(verbose=True)  # the compiler names the float16 tensors only in its verbose log
        try:
            _check(rknn.config(**config), "config", rknn_path)
            with _captured_stdout() as log:
                _check(rknn.hybrid_quantization_step2(model_input=str(Path(tmp) / f"{stem}.model"),
                                                      data_input=str(Path(tmp) / f"{stem}.data"),
                                                      model_quantization_cfg=str(cfg)), "hybrid_quantization_step2",
                       rknn_path)
                _check(rknn.export_rknn(str(rknn_path)), "export_rknn", rknn_path)
            _check(rknn.init_runtime(), "init_runtime (simulator)", rknn_path)
        except BaseException:
            rknn.release()
            raise
    kept = {line.rsplit("tensor:", 1)[-1].strip() for line in log.text().splitlines() if HYBRID_LOG in line}
    return RknnModel(rknn, rknn_path, platform, True), tensors, len(kept & set(tensors))


def _cfg_tensors(cfg: Path) -> list[str]:
    """The tensor names step 1 quantised: the keys under ``quantize_parameters`` of its .quantization.cfg."""
    import yaml

    params = (yaml.safe_load(cfg.read_text()) or {}).get("quantize_parameters") or {}
    return list(params)


def _write_custom_layers(cfg: Path, tensors) -> None:
    text, empty = cfg.read_text(), "custom_quantize_layers: {}\n"
    if empty not in text:
        raise RknnError(f"{cfg}: no empty 'custom_quantize_layers' section to fill (an rknn-toolkit2 version whose "
                        f"hybrid configuration this exporter does not know)")
    layers = "".join(f"    {json.dumps(t)}: float16\n" for t in tensors)
    cfg.write_text(text.replace(empty, "custom_quantize_layers:\n" + layers if tensors else empty))


class _captured_stdout:
    """Captures what native code writes to file descriptor 1 (rknn's verbose compiler log): passed on in full
    when the block fails, else only its hybrid lines."""

    def __enter__(self):
        import os
        import sys

        sys.stdout.flush()
        self._file = tempfile.TemporaryFile(mode="w+b")
        self._saved = os.dup(1)
        os.dup2(self._file.fileno(), 1)
        return self

    def __exit__(self, *exc):
        import os
        import sys

        sys.stdout.flush()
        os.dup2(self._saved, 1)
        os.close(self._saved)
        self._file.seek(0)
        self._text = self._file.read().decode(errors="replace")
        self._file.close()
        shown = self._text if exc[0] is not None else "".join(
            line for line in self._text.splitlines(keepends=True) if HYBRID_LOG in line)
        sys.stdout.write(shown)
        return False

    def text(self) -> str:
        return self._text
