"""OpenVINO IR from our ONNX export and int8 through NNCF (running an IR: utils/infer/openvino_runtime.py).

    export_openvino("m.onnx", "m.xml", metadata)                          # float32 IR: m.xml + m.bin
    quantize_openvino("m.xml", "m.int8.xml", images, batch_size=1)        # int8, calibrated on images

The IR is converted from the ONNX file export.py has just written and verified (``openvino.convert_model``),
so it carries the same graph, output layout and names; our metadata goes into the IR's rt_info under
``model_info`` (strings; lists as JSON), where ``read_openvino_metadata`` finds it. Weights stay float32
(``compress_to_fp16=False``): the float32 IR is then a check of the conversion, and NNCF quantises from
float32. int8 is NNCF's post-training quantisation (``nncf.quantize``, the performance preset: symmetric
int8 weights per channel and int8 activations, with fast bias correction) calibrated on the same
letterboxed dataset images as the int8 ONNX (utils/export/int8.calibration_images): BGR 0-255 float,
no normalisation, exactly what the model takes.

openvino and nncf are optional (``pip install openvino nncf`` or ``pip install -e ".[openvino]"``);
utils.infer.openvino_runtime.require_openvino says so before any work is done.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from utils.export.compare import batches
from utils.infer.openvino_runtime import META_SECTION


def _set_metadata(model, metadata: dict) -> None:
    for key, value in metadata.items():
        model.set_rt_info(value if isinstance(value, str) else json.dumps(value), [META_SECTION, str(key)])


def export_openvino(onnx_path, xml_path, metadata: dict) -> Path:
    """Convert the ONNX file to a float32 IR (xml_path and the .bin beside it); returns xml_path."""
    import openvino as ov

    model = ov.convert_model(str(onnx_path))
    _set_metadata(model, metadata)
    xml_path = Path(xml_path)
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return xml_path


def quantize_openvino(xml_path, int8_path, images: np.ndarray, batch_size: int = 1, ignored: Sequence[str] = (),
                      source_onnx=None) -> Path:
    """NNCF int8 of the IR at ``xml_path`` calibrated on ``images`` [n, 3, H, W]; returns int8_path.
    ignored: names of ops kept in float (NNCF's IgnoredScope, validated: an unknown name is an error).
    source_onnx: the ONNX file the IR came from; its head's decoding (utils/quant/decode_tail.py) is kept in
    float too, as in the int8 ONNX (NNCF quantised, damoyolo_s's split layout lost 2.3 points of mAP50-95)."""
    import nncf
    import onnx
    import openvino as ov

    from utils.quant.decode_tail import decode_nodes
    from utils.quant.hybrid_config import openvino_ignored_names

    model = ov.Core().read_model(str(xml_path))
    decoding = []
    if source_onnx is not None:
        graph = onnx.load(str(source_onnx))
        decoding = [n for n in openvino_ignored_names(model, graph, decode_nodes(graph)) if n not in ignored]
    ignored = [*ignored, *decoding]
    calibration = batches(np.ascontiguousarray(images, dtype=np.float32), batch_size)  # the model's batch size
    scope = nncf.IgnoredScope(names=list(ignored), validate=True) if ignored else None
    quantized = nncf.quantize(model, nncf.Dataset(calibration), preset=nncf.QuantizationPreset.PERFORMANCE,
                              subset_size=len(calibration), **({"ignored_scope": scope} if scope else {}))
    kept = (f", decoding ({len(decoding)} ops) in float" if decoding else "") + \
        (f", {len(ignored) - len(decoding)} ops kept in float" if len(ignored) > len(decoding) else "")
    quantized.set_rt_info(f"int8 (NNCF post-training quantisation, performance preset, {len(images)} calibration "
                          f"images{kept})", [META_SECTION, "quantization"])
    int8_path = Path(int8_path)
    ov.save_model(quantized, str(int8_path), compress_to_fp16=False)
    return int8_path


