"""utils/quant/uint8_activations.py: int8 activation grids rewritten as uint8 give the same arithmetic (the QDQ
file run as written, bit for bit), leave weights and biases alone, and let onnxruntime fuse every conv into
its int8 kernel."""
import io

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto

from tests.reference import randomize_bn
from tests.support import image_batch, tiny_detect_model, varied_model
from utils.export.compare import cosine
from utils.export.int8 import quantize_int8
from utils.export.layouts import ExportModel
from utils.quant.fake_quant import SCHEMES
from utils.quant.prepare import prepare_qat
from utils.quant.uint8_activations import to_uint8_activations

ort = pytest.importorskip("onnxruntime")
SIZE = 64


def _run(model: onnx.ModelProto, x: np.ndarray, as_written: bool) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_DISABLE_ALL if as_written
                                        else ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})


def _fused_ops(model: onnx.ModelProto, tmp_path) -> list[str]:
    """The op types of onnxruntime's optimised graph (its QDQ fusions applied)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(str(tmp_path / "optimised.onnx")).graph.node]


def _zero_point_types(model: onnx.ModelProto, op_type: str) -> list[int]:
    constants = {t.name: t.data_type for t in model.graph.initializer}
    constants.update({n.output[0]: n.attribute[0].t.data_type for n in model.graph.node if n.op_type == "Constant"})
    return [constants[n.input[2]] for n in model.graph.node if n.op_type == op_type and len(n.input) > 2]


def _fp32_file(tmp_path):
    model = varied_model("models/yoloxn.yaml", nc=3, size=SIZE)
    path = tmp_path / "fp32.onnx"
    torch.onnx.export(ExportModel(model.fuse(), "per-level"), image_batch(1, SIZE), str(path), opset_version=13,
                      dynamo=False, input_names=["images"])
    return path


def test_post_training_file_same_arithmetic_every_conv_fused(tmp_path):
    """yoloxn's post-training int8 file: as uint8 it computes the same, bit for bit; weights and biases keep
    their types; onnxruntime fuses every one of its 113 convs into QLinearConv."""
    fp32 = _fp32_file(tmp_path)
    calib = image_batch(4, SIZE, seed=2).numpy()
    int8 = onnx.load(str(quantize_int8(fp32, tmp_path / "int8.onnx", calib)))
    uint8 = onnx.load(str(quantize_int8(fp32, tmp_path / "uint8.onnx", calib, activations="uint8")))
    x = image_batch(1, SIZE, seed=3).numpy()
    for a, b in zip(_run(int8, x, as_written=True), _run(uint8, x, as_written=True)):
        np.testing.assert_array_equal(a, b)
    assert set(_zero_point_types(uint8, "QuantizeLinear")) == {TensorProto.UINT8}
    weights = [n for n in uint8.graph.node if n.op_type == "DequantizeLinear"
               and n.input[0] in {t.name for t in uint8.graph.initializer}]
    assert weights and {t.data_type for t in uint8.graph.initializer if t.name in {n.input[0] for n in weights}} \
        <= {TensorProto.INT8, TensorProto.INT32}  # weights int8, biases int32: untouched
    ops = _fused_ops(uint8, tmp_path)  # (with int8 activations, on an AVX2 CPU, 110 of the 113 stay float)
    assert "Conv" not in ops and ops.count("QLinearConv") == sum(n.op_type == "Conv" for n in uint8.graph.node)
    onnx.checker.check_model(uint8)
    used = {i for n in uint8.graph.node for i in n.input}
    assert all(t.name in used for t in uint8.graph.initializer)  # the int8 zero points it replaced are gone
    with pytest.raises(ValueError, match="activations must be one of"):
        quantize_int8(fp32, tmp_path / "x.onnx", calib, activations="int16")


def test_fresh_model_convs_get_own_biases_and_int8_kernels(tmp_path):
    """A freshly initialised model folds to all-zero biases, which torch.onnx writes once and hands the other
    convs through Identity nodes; the int8 file still gives every conv its own int32 bias, so onnxruntime
    fuses every conv (before: 'Expected bias ... to be an initializer', most convs left in float)."""
    from models.yolo import Model

    torch.manual_seed(0)
    model = Model("models/yoloxn.yaml", nc=3).eval().fuse()
    fp32 = tmp_path / "fresh.onnx"
    torch.onnx.export(ExportModel(model, "per-level"), image_batch(1, SIZE), str(fp32), opset_version=13,
                      dynamo=False, input_names=["images"])
    written = onnx.load(str(fp32))
    assert sum(n.op_type == "Identity" for n in written.graph.node) > 10  # the shared zero biases
    int8 = onnx.load(str(quantize_int8(fp32, tmp_path / "fresh.int8.onnx", image_batch(2, SIZE, seed=2).numpy(),
                                       activations="uint8")))
    producers = {o: n for n in int8.graph.node for o in n.output}
    convs = [n for n in int8.graph.node if n.op_type == "Conv"]
    assert len(convs) == sum(n.op_type == "Conv" for n in written.graph.node)
    bias_dqs = [producers[c.input[2]] for c in convs]
    assert all(dq.op_type == "DequantizeLinear" for dq in bias_dqs)
    assert len({dq.input[0] for dq in bias_dqs}) == len(convs)  # an int32 bias per conv, on its own grid
    ops = _fused_ops(int8, tmp_path)
    assert "Conv" not in ops and ops.count("QLinearConv") == len(convs)
    x = image_batch(1, SIZE, seed=3)
    with torch.no_grad():
        expected = [t.numpy() for t in ExportModel(model, "per-level")(x)]
    for got, want in zip(_run(int8, x.numpy(), as_written=True), expected):
        assert cosine(got, want) > 0.95


@pytest.mark.parametrize("scheme", ["qdq", "rknn"])
def test_qat_file_same_arithmetic_weights_stay_int8(scheme):
    """A QAT export quantises its float weights in the graph (QuantizeLinear of a constant): those stay int8;
    every activation grid moves to uint8; the file as written is unchanged bit for bit."""
    torch.manual_seed(0)
    x = image_batch(2, SIZE)
    qat = prepare_qat(randomize_bn(tiny_detect_model(3)).eval(), SCHEMES[scheme], x[:1])
    qat.train()(x)
    f = io.BytesIO()
    torch.onnx.export(ExportModel(qat.eval(), "per-level"), x, f, opset_version=13, dynamo=False,
                      input_names=["images"])
    int8 = onnx.load_from_string(f.getvalue())
    uint8 = onnx.load_from_string(f.getvalue())
    n_activations = len(qat.quantizers())  # every activation quantiser, the head convs' outputs among them
    assert to_uint8_activations(uint8) == n_activations
    assert sorted(_zero_point_types(uint8, "QuantizeLinear")) == sorted(
        [TensorProto.INT8] * 20 + [TensorProto.UINT8] * n_activations)  # the 20 convs' weights
    for a, b in zip(_run(int8, x.numpy(), as_written=True), _run(uint8, x.numpy(), as_written=True)):
        np.testing.assert_array_equal(a, b)
