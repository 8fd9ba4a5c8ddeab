"""utils/export/int8.py's calibration methods: the percentile clips each activation's rarest values, so its
ranges are never wider than MinMax's and most are narrower; the file says which method made it."""
import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from tests.reference import randomize_bn
from tests.support import image_batch, tiny_detect_model
from utils.export.int8 import CALIB_PERCENTILE, quantize_int8
from utils.export.layouts import ExportModel
from utils.export.onnx_file import read_metadata

pytest.importorskip("onnxruntime")
SIZE = 64


def _activation_scales(model: onnx.ModelProto) -> dict[str, float]:
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return {n.input[0]: float(constants[n.input[1]]) for n in model.graph.node
            if n.op_type == "QuantizeLinear" and n.input[0] not in constants}


def test_percentile_ranges_are_never_wider_than_minmax(tmp_path):
    torch.manual_seed(0)
    model = randomize_bn(tiny_detect_model(3)).eval()
    fp32 = tmp_path / "fp32.onnx"
    torch.onnx.export(ExportModel(model.fuse(), "per-level"), image_batch(1, SIZE), str(fp32), opset_version=13,
                      dynamo=False, input_names=["images"])
    calib = image_batch(6, SIZE, seed=2).numpy()
    minmax = onnx.load(str(quantize_int8(fp32, tmp_path / "minmax.onnx", calib)))
    percentile = onnx.load(str(quantize_int8(fp32, tmp_path / "pct.onnx", calib, calib_method="percentile")))
    wide, narrow = _activation_scales(minmax), _activation_scales(percentile)
    assert wide.keys() == narrow.keys() and len(wide) > 10
    ratios = np.array([narrow[k] / wide[k] for k in wide])
    assert (ratios <= 1 + 1e-6).all() and (ratios < 1).mean() > 0.9 and ratios.min() < 0.95
    assert f"percentile {CALIB_PERCENTILE}" in read_metadata(percentile)["quantization"]
    assert "MinMax" in read_metadata(minmax)["quantization"]
    with pytest.raises(ValueError, match="calib_method must be one of"):
        quantize_int8(fp32, tmp_path / "x.onnx", calib, calib_method="entropy")
