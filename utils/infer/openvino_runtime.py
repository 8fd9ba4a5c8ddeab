"""OpenVINO IRs as runnable functions, and the metadata export.py stores in them (rt_info). The IRs are written
by utils/export/openvino.py; val.py, detect.py and the export checks run them through this module.

    run = openvino_runner("m.int8.xml", output_names)   # numpy batch -> outputs
    meta = read_openvino_metadata("m.xml")              # as read_metadata gives for ONNX

openvino (and nncf for int8 exports) are optional: ``pip install openvino nncf`` or ``pip install -e ".[openvino]"``;
``require_openvino`` says so before any work is done.
"""
from __future__ import annotations

import importlib
from typing import Callable, Sequence

import numpy as np

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


def read_openvino_metadata(xml_path) -> dict:
    """Our metadata from an IR's rt_info, as a dict of strings (as read_metadata gives for ONNX)."""
    import openvino as ov

    model = ov.Core().read_model(str(xml_path))
    if not model.has_rt_info([META_SECTION]):
        return {}
    return {str(k): v.astype(str) for k, v in model.get_rt_info()[META_SECTION].items()}


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
