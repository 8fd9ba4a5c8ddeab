"""OpenVINO IR from our ONNX export, int8 through NNCF, and the IR as a runnable function.

    export_openvino("m.onnx", "m.xml", metadata)                          # float32 IR: m.xml + m.bin
    quantize_openvino("m.xml", "m.int8.xml", images, batch_size=1)        # int8, calibrated on images
    run = openvino_runner("m.int8.xml", output_names)                      # numpy batch -> outputs

The IR is converted from the ONNX file export.py has just written and verified (``openvino.convert_model``),
so it carries the same graph, output layout and names; our metadata goes into the IR's rt_info under
``model_info`` (strings; lists as JSON), where ``read_openvino_metadata`` finds it. Weights stay float32
(``compress_to_fp16=False``): the float32 IR is then a check of the conversion, and NNCF quantises from
float32. int8 is NNCF's post-training quantisation (``nncf.quantize``, the performance preset: symmetric
int8 weights per channel and int8 activations, with fast bias correction) calibrated on the same
letterboxed dataset images as the int8 ONNX (utils/export_int8.calibration_images): BGR 0-255 float,
no normalisation, exactly what the model takes.

openvino and nncf are optional (``pip install openvino nncf`` or ``pip install -e ".[openvino]"``);
``require_openvino`` says so before any work is done.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from utils.export.compare import batches

INSTALL = 'pip install openvino nncf (or pip install -e ".[openvino]")'
META_SECTION = "model_info"  # rt_info section of our metadata, where OpenVINO tools look for model facts


def require_openvino(int8: bool = False) -> None:
    """Raise ImportError naming what to install when openvino (or, for int8, nncf) cannot be imported."""
    missing = []
    for name in ("openvino",) + (("nncf",) if int8 else ()):
        try:
            importlib.import_module(name)
        except ImportError as e:
            missing.append(f"{name} ({e})")
    if missing:
        raise ImportError(f"--include openvino{' --int8' if int8 else ''} needs {' and '.join(missing)}: "
                          f"install it with {INSTALL}")


def _set_metadata(model, metadata: dict) -> None:
    for key, value in metadata.items():
        model.set_rt_info(value if isinstance(value, str) else json.dumps(value), [META_SECTION, str(key)])


def read_openvino_metadata(xml_path) -> dict:
    """Our metadata from an IR's rt_info, as a dict of strings (as read_metadata gives for ONNX)."""
    import openvino as ov

    model = ov.Core().read_model(str(xml_path))
    if not model.has_rt_info([META_SECTION]):
        return {}
    return {str(k): v.astype(str) for k, v in model.get_rt_info()[META_SECTION].items()}


def export_openvino(onnx_path, xml_path, metadata: dict) -> Path:
    """Convert the ONNX file to a float32 IR (xml_path and the .bin beside it); returns xml_path."""
    import openvino as ov

    model = ov.convert_model(str(onnx_path))
    _set_metadata(model, metadata)
    xml_path = Path(xml_path)
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return xml_path


def quantize_openvino(xml_path, int8_path, images: np.ndarray, batch_size: int = 1) -> Path:
    """NNCF int8 of the IR at ``xml_path`` calibrated on ``images`` [n, 3, H, W]; returns int8_path."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(xml_path))
    calibration = batches(np.ascontiguousarray(images, dtype=np.float32), batch_size)  # the model's batch size
    quantized = nncf.quantize(model, nncf.Dataset(calibration), preset=nncf.QuantizationPreset.PERFORMANCE,
                              subset_size=len(calibration))
    quantized.set_rt_info(f"int8 (NNCF post-training quantisation, performance preset, {len(images)} calibration "
                          f"images)", [META_SECTION, "quantization"])
    int8_path = Path(int8_path)
    ov.save_model(quantized, str(int8_path), compress_to_fp16=False)
    return int8_path


def openvino_runner(xml_path, names: Sequence[str], device: str = "CPU") -> Callable[[np.ndarray], list[np.ndarray]]:
    """The IR compiled for ``device`` as a function: float32 batch [B, 3, H, W] in, outputs in ``names`` order."""
    import openvino as ov

    # float32 for what is not int8: on CPUs with bfloat16 units the CPU plugin otherwise runs bfloat16,
    # which would blur the conversion check (cosine ~0.99 for a float32 IR)
    compiled = ov.Core().compile_model(str(xml_path), device, {"INFERENCE_PRECISION_HINT": "f32"})
    by_name = {n: o for o in compiled.outputs for n in o.get_names()}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(f"{xml_path}: no output named {missing}; the IR has {sorted(by_name)}")
    request = compiled.create_infer_request()

    def run(batch: np.ndarray) -> list[np.ndarray]:
        result = request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})
        return [np.array(result[by_name[n]]) for n in names]  # copies: the request reuses its buffers

    return run
