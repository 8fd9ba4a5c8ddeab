"""A --qat checkpoint's QDQ export in each toolchain: onnxruntime running it as written equals the
fake-quantised torch model bit for bit; OpenVINO converts its Q/DQ pairs to FakeQuantize; rknn-toolkit2
imports it as a QAT model and builds int8 from its ranges. Toolchain tests skip where the package is missing."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

import export
from tests.support import power_of_two_grids, varied_model
from utils.checkpoints import save_checkpoint
from utils.quant.fake_quant import SCHEMES
from utils.quant.prepare import prepare_qat

SIZE = 64


@pytest.fixture(scope="module", params=["rknn"])  # asymmetric int8: zero points too (qdq is its symmetric case)
def qat_export(request, tmp_path_factory):
    """(QDQ ONNX path, the QAT model, its target) of a yoloxn with ranges observed on a batch: deep enough
    for rounding differences to grow, as they did before the torch side quantised as QuantizeLinear does.
    Its grids are then moved to powers of two, so the float sums of either runtime are exact: without that,
    one thread against two (a different summation order) flipped near-ties and the outputs parted by 1.0."""
    tmp = tmp_path_factory.mktemp(f"qat_{request.param}")
    model = varied_model("models/yoloxn.yaml", nc=3, size=SIZE)
    x = torch.rand(4, 3, SIZE, SIZE) * 255
    qat = prepare_qat(model, SCHEMES[request.param], x[:1]).train()
    with torch.no_grad():
        qat(x)
    power_of_two_grids(qat)
    weights = save_checkpoint(tmp / "qat.pt", {"model": qat.state_dict(), "yaml": model.yaml,
                                               "qat": {"target": request.param, "imgsz": SIZE}})
    results = export.run(weights=str(weights), img_size=SIZE, opset=13, deploy=True, report=False)
    return results["onnx"], qat.eval(), request.param


def test_qdq_file_as_written_equals_the_qat_model(qat_export):
    """val.py --qdq-exact (load_weights(qdq_exact=True)) runs the file's 8-bit arithmetic: the QAT model's
    decoded output to float32 rounding; the torch side quantises as QuantizeLinear does (x / scale)."""
    import onnxruntime as ort

    from utils.infer.backends import load_weights

    path, qat, _ = qat_export
    model, _ = load_weights(path, imgsz=SIZE, qdq_exact=True)
    level = model.session.get_session_options().graph_optimization_level
    assert level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3)) * 255
    with torch.no_grad():
        want = qat(x)
    got = model(x)
    # the quantised layers agree exactly; what follows them in float (sigmoid, exp of the box decoding) is each
    # runtime's own float32 function: onnxruntime's sigmoid gives 0 where torch's gives 1e-19
    torch.testing.assert_close(got[..., 4:], want[..., 4:], rtol=0, atol=1e-6)
    torch.testing.assert_close(got[..., :4], want[..., :4], rtol=1e-5, atol=1e-3)


def test_uint8_activations_export_computes_the_same(qat_export, tmp_path):
    """export.py --int8-activations uint8 of the QAT checkpoint: the same file as written, bit for bit, with
    uint8 activation grids, which onnxruntime fuses into its int8 kernels (every conv of yoloxn)."""
    import onnxruntime as ort

    from utils.export.onnx_file import read_metadata
    from utils.infer.backends import load_weights

    path, _, _ = qat_export
    results = export.run(weights=str(path.with_suffix(".pt")), img_size=SIZE, opset=13, deploy=True, report=False,
                         int8_activations="uint8", output=tmp_path / "u8.onnx")
    uint8 = onnx.load(str(results["onnx"]))
    assert "activations as uint8" in read_metadata(uint8)["quantization"]
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3)) * 255
    want, got = (load_weights(f, imgsz=SIZE, qdq_exact=True)[0](x) for f in (path, results["onnx"]))
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "fused.onnx")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    ort.InferenceSession(str(results["onnx"]), options, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "fused.onnx")).graph.node]
    assert "Conv" not in ops and ops.count("QLinearConv") == sum(n.op_type == "Conv" for n in uint8.graph.node)


def test_openvino_reads_the_qat_file_as_fakequantize(qat_export, tmp_path):
    pytest.importorskip("openvino", reason="openvino not installed (pip install openvino nncf)")
    import openvino as ov

    from utils.export.openvino import export_openvino
    from utils.quant.hybrid_config import count_ops

    path, _, _ = qat_export
    graph = onnx.load(str(path)).graph
    weights = {i.name for i in graph.initializer}
    # every grid becomes a FakeQuantize; one written again after max pooling or a slice (SameGrid) OpenVINO may
    # merge with the one it repeats
    activations = sum(n.op_type == "QuantizeLinear" and n.input[0] not in weights and "same_grid" not in n.name
                      for n in graph.node)
    xml = export_openvino(path, tmp_path / "qat.xml", {})
    model = ov.Core().read_model(str(xml))
    assert count_ops(model, "FakeQuantize") >= activations > 0
    out = ov.Core().compile_model(model, "CPU")(np.zeros((1, 3, SIZE, SIZE), np.float32))
    assert len(out) == 9


def test_rknn_imports_the_qat_file_without_calibration(qat_export, tmp_path):
    pytest.importorskip("rknn.api", reason="rknn-toolkit2 not installed (its own environment: README)")
    from utils.export.rknn import build_rknn

    path, _, _ = qat_export
    with pytest.raises(ValueError, match="not calibrated again"):
        build_rknn(path, tmp_path / "x.rknn", "rk3588", np.zeros((1, 3, SIZE, SIZE), np.float32), qat=True)
    rknn = build_rknn(path, tmp_path / "qat.rknn", "rk3588", None, qat=True)
    try:
        out = rknn.run(np.zeros((1, 3, SIZE, SIZE), np.float32))
        assert rknn.runtime.endswith("int8 (QAT ranges)") and len(out) == 9
    finally:
        rknn.release()
    assert (tmp_path / "qat.rknn").is_file()
