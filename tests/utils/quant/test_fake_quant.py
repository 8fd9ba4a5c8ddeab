"""Fake quantisation (utils/quant) against onnxruntime's int8 arithmetic: single tensors, then whole models
exported as QDQ ONNX."""
import io

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from tests.reference import randomize_bn
from tests.support import tiny_detect_model, varied_model
from utils.export.layouts import ExportModel
from utils.quant.cpu_int8 import int8_kernels_saturate
from utils.quant.fake_quant import SCHEMES, ActivationQuantizer, quantize_weight, weight_scales
from utils.quant.prepare import QuantConv2d, QuantSiLU, SameGrid, prepare_qat

ort = pytest.importorskip("onnxruntime")
# onnxruntime's fused int8 kernels equal the 8-bit arithmetic within their rounding only where int8 products
# accumulate in 32 bits (VNNI, AMX, ARM): without VNNI they saturate in 16 bits (utils/quant/cpu_int8.py)
needs_vnni = pytest.mark.skipif(int8_kernels_saturate(), reason="this x86 CPU has no VNNI: onnxruntime's u8 x s8 "
                                                                 "int8 kernels saturate, so they are not compared")


def _quantize_dequantize_in_ort(x: np.ndarray, scale: float, zero_point: int, unsigned: bool) -> np.ndarray:
    qtype = TensorProto.UINT8 if unsigned else TensorProto.INT8
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(x.shape))],
                              [helper.make_tensor("s", TensorProto.FLOAT, [], [scale]),
                               helper.make_tensor("z", qtype, [], [zero_point])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_activation_grid_equals_onnxruntimes_quantize_dequantize(scheme):
    torch.manual_seed(0)
    x = torch.randn(4, 8, 5, 5) * 3 + 1
    q = ActivationQuantizer(SCHEMES[scheme]).train()
    y = q(x)  # the first batch sets the range
    scale, zero_point = q.grid()
    assert float(q.lo) == float(x.min()) and float(q.hi) == float(x.max())
    assert (zero_point == 0) == (scheme == "qdq")  # symmetric only for QDQ targets
    expected = _quantize_dequantize_in_ort(x.numpy(), scale, zero_point, unsigned=SCHEMES[scheme].qmin == 0)
    np.testing.assert_allclose(y.numpy(), expected, rtol=0, atol=scale * 1e-3)  # the same levels
    assert len(np.unique(y.numpy())) <= 256
    q.eval()
    q(x * 100)  # a frozen range clamps instead of widening
    assert q.grid() == (scale, zero_point)


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_rounding_at_near_ties_is_quantizelinears_division(scheme):
    """Values at and one float32 step around each half-step of the grid: the quantiser rounds x / scale as
    QuantizeLinear does, bit for bit. x * (1 / scale), what torch's own kernel computes, parts from it at
    some of these values, and through a deep model such one-step flips grew to a cosine of 0.93."""
    torch.manual_seed(0)
    q = ActivationQuantizer(SCHEMES[scheme]).train()
    q(torch.randn(64) * 3 + 1)  # an arbitrary range, so an arbitrary (not a power-of-two) scale
    q.eval()
    scale, zero_point = q.grid()
    halves = (torch.arange(-120, 120, dtype=torch.float32) + 0.5) * scale
    x = torch.cat([halves, torch.nextafter(halves, torch.tensor(-1e9)), torch.nextafter(halves, torch.tensor(1e9))])
    by_reciprocal = torch.round(x * (1 / torch.tensor(scale)))
    assert (by_reciprocal != torch.round(x / torch.tensor(scale))).any()  # these values tell the two apart
    expected = _quantize_dequantize_in_ort(x.numpy(), scale, zero_point, unsigned=SCHEMES[scheme].qmin == 0)
    np.testing.assert_array_equal(q(x).numpy(), expected)


def test_weights_are_symmetric_int8_per_output_channel():
    torch.manual_seed(0)
    w = torch.randn(6, 4, 3, 3) * torch.arange(1, 7).view(-1, 1, 1, 1)
    wq = quantize_weight(w)
    scales = weight_scales(w)
    levels = (wq / scales.view(-1, 1, 1, 1)).flatten(1)
    torch.testing.assert_close(levels, levels.round(), rtol=0, atol=1e-4)  # on each channel's grid
    assert levels.abs().amax(1).round().tolist() == [127.0] * 6  # max |w| maps to 127, none to -128
    assert float((wq - w).abs().max()) <= float(scales.max()) / 2 + 1e-6


class _ConvBlock(torch.nn.Module):
    """Input grid, then one conv with per-channel int8 weights and its own output grid."""

    def __init__(self, scheme, c_in: int, k: int):
        super().__init__()
        self.input = ActivationQuantizer(scheme)
        self.conv = QuantConv2d(torch.nn.Conv2d(c_in, 8, k, padding=k // 2), scheme)

    def forward(self, x):
        return self.conv(self.input(x))


def _onnx(module, x) -> bytes:
    f = io.BytesIO()
    torch.onnx.export(module, x, f, opset_version=13, dynamo=False, input_names=["images"])
    return f.getvalue()


def _ort(model: bytes, x: torch.Tensor, optimise: bool = True) -> list[np.ndarray]:
    """onnxruntime's outputs: with ``optimise`` (its default) Q/DQ around convs fuse into its int8 kernels
    (QLinearConv); without, it runs the Q/DQ pairs as written (the ONNX semantics)."""
    options = ort.SessionOptions()
    if not optimise:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
@pytest.mark.parametrize("c_in, k, amplitude", [(8, 1, 1.0), (64, 3, 30.0)])
def test_quantised_conv_equals_its_qdq_graph(scheme, c_in, k, amplitude):
    block, x, expected, model = _conv_case(scheme, c_in, k, amplitude)
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in onnx.load_from_string(model).graph.node}
    step = block.conv.output.grid()[0]
    assert np.abs(_ort(model, x, optimise=False)[0] - expected).max() <= step * 1e-3  # Q/DQ as written: the same


@needs_vnni
@pytest.mark.parametrize("scheme", sorted(SCHEMES))
@pytest.mark.parametrize("c_in, k, amplitude", [(8, 1, 1.0), (64, 3, 30.0)])
def test_quantised_conv_equals_onnxruntimes_int8_kernel_within_one_step(scheme, c_in, k, amplitude):
    block, x, expected, model = _conv_case(scheme, c_in, k, amplitude)
    step = block.conv.output.grid()[0]
    assert np.abs(_ort(model, x)[0] - expected).max() <= step * 1.001  # int8 kernel: its own rounding, one step


def _conv_case(scheme, c_in, k, amplitude):
    """(a quantised conv block with observed ranges, its input, its eval output, its QDQ ONNX bytes)."""
    torch.manual_seed(0)
    block = _ConvBlock(SCHEMES[scheme], c_in, k)
    x = torch.randn(2, c_in, 8, 8) * amplitude
    block.train()(x)
    with torch.no_grad():
        expected = block.eval()(x).numpy()
    return block, x, expected, _onnx(block, x)


def _export_and_run(qat, x, optimise: bool):
    """(torch's per-level outputs, onnxruntime's on the exported QDQ file, the file's QuantizeLinear count)."""
    exported = ExportModel(qat.eval(), "per-level")
    with torch.no_grad():
        expected = [t.numpy() for t in exported(x)]
    model = _onnx(exported, x)
    n_quantize = sum(n.op_type == "QuantizeLinear" for n in onnx.load_from_string(model).graph.node)
    return expected, _ort(model, x, optimise), n_quantize


def _steps(head, level: int) -> list[float]:
    """One step of each per-level output's grid: raw boxes; a quarter step of the logits after a sigmoid."""
    return [head.reg_preds[level].output.grid()[0], head.obj_preds[level].output.grid()[0] / 4,
            head.cls_preds[level].output.grid()[0] / 4]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_small_qat_model_exports_the_qdq_graph_it_trains(scheme):
    """A small detector (strided convs, 1x1 branches, DetectX), BN folded, ranges observed on a batch: its QDQ
    ONNX as written gives torch's outputs within one step of each output's grid; onnxruntime's int8
    kernels round each layer their own way (one step, above), which a few layers grow, so there the
    outputs agree to a cosine of 0.999."""
    torch.manual_seed(0)
    model = randomize_bn(tiny_detect_model(3)).eval()
    x = torch.rand(2, 3, 64, 64) * 255
    qat = prepare_qat(model, SCHEMES[scheme], x[:1])
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in qat.modules())
    assert all(isinstance(m, QuantConv2d) for m in qat.modules() if isinstance(m, torch.nn.Conv2d))
    qat.train()(x)
    expected, got, n_quantize = _export_and_run(qat, x, optimise=False)
    assert n_quantize >= len(qat.quantizers())
    for level in range(3):
        for k, step in enumerate(_steps(qat.detect, level)):
            diff = np.abs(expected[3 * level + k] - got[3 * level + k]).max()
            assert diff <= step * 1.001, f"level {level} output {k}: max |diff| {diff:.3g} > one step {step:.3g}"
    if not int8_kernels_saturate():
        expected, got, _ = _export_and_run(qat, x, optimise=True)
        assert min(_cosine(a, b) for a, b in zip(expected, got)) > 0.999


def _unquantised_ops(graph) -> list[str]:
    """The computing ops of a QDQ graph whose output meets no QuantizeLinear (the head's output Sigmoids aside),
    the Convs whose input comes from no DequantizeLinear (what a toolchain would run in float) and the Relus
    whose input was quantised already (a second, coarser grid before the one a toolchain fuses)."""
    readers, producer = {}, {}
    for n in graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
        for o in n.output:
            producer[o] = n.op_type

    def quantised(tensor: str) -> bool:  # read by a QuantizeLinear, or by a Relu (fused) whose output is
        return any(r.op_type == "QuantizeLinear" or (r.op_type == "Relu" and quantised(r.output[0]))
                   for r in readers.get(tensor, []))

    outputs = {o.name for o in graph.output}
    head_outputs = [n for n in graph.node if n.op_type == "Sigmoid" and n.output[0] in outputs]
    unquantised = [n.op_type for n in graph.node if n.op_type in ("Conv", "Add", "Mul", "Concat", "Sigmoid")
                   and n not in head_outputs and not quantised(n.output[0])]
    twice = ["Relu of an already quantised tensor" for n in graph.node
             if n.op_type == "Relu" and producer.get(n.input[0]) == "DequantizeLinear"]  # one grid, after the Relu
    return unquantised + twice + [f"Conv input from {producer.get(n.input[0])}" for n in graph.node
                                  if n.op_type == "Conv" and producer.get(n.input[0]) != "DequantizeLinear"]


def test_yoloxn_qat_graph_quantises_what_a_toolchain_quantises():
    """A whole SiLU model in the exported QDQ file: every Sigmoid and Mul of its SiLUs and every Conv, Add and
    Concat output meets a QuantizeLinear (directly, or after a Relu that fuses with it), and onnxruntime runs it."""
    model = varied_model("models/yoloxn.yaml", nc=3, size=96)
    x = torch.rand(1, 3, 96, 96) * 255
    qat = prepare_qat(model, SCHEMES["qdq"], x)
    assert sum(isinstance(m, QuantSiLU) for m in qat.modules()) == sum(
        isinstance(m, torch.nn.SiLU) for m in model.modules())
    qat.train()(x)
    exported = ExportModel(qat.eval(), "per-level")
    model_bytes = _onnx(exported, x)
    graph = onnx.load_from_string(model_bytes).graph
    unquantised = _unquantised_ops(graph)
    assert unquantised == [], f"ops whose outputs stay in float: {unquantised}"
    producer = {o: n.op_type for n in graph.node for o in n.output}
    assert not [n.name for n in graph.node if n.op_type == "QuantizeLinear" and producer.get(n.input[0]) ==
                "DequantizeLinear"]  # one grid per tensor: no Q/DQ pair straight after another
    ops = {n.op_type for n in graph.node}
    assert not ops & {"Round", "ReduceMax", "Abs", "Div", "Cast"}  # scales and zero points are constants
    constants = {i.name for i in graph.initializer} | {n.output[0] for n in graph.node if n.op_type == "Constant"}
    assert all(set(n.input[1:]) <= constants for n in graph.node if n.op_type == "QuantizeLinear")
    assert len(_ort(model_bytes, x)) == 9


@pytest.mark.parametrize("act", ["silu", "relu"])
def test_a_head_with_stems_and_branches_is_quantised_like_the_body(act):
    """YOLOXHead (official YOLOX's layout) owns its stems and branch convs: its SiLUs become quantised Sigmoid
    and Mul, a ReLU fuses with its conv (the grid after it), every head conv is linked to its input's grid
    (int32 bias), and the exported file quantises every op there as in the body; as written it equals the
    QAT model within one step of each output's grid."""
    cfg = {"nc": 3, "depth_multiple": 1.0, "width_multiple": 0.125, "activation": act,
           "backbone": [[-1, 1, "Conv", [128, 3, 2]], [-1, 1, "Conv", [128, 3, 2]], [-1, 1, "C3", [128]],
                        [-1, 1, "Conv", [128, 3, 2]], [-1, 1, "Conv", [128, 3, 2]]],
           "head": [[[2, 3, 4], 1, "YOLOXHead", ["nc", 1]]]}
    model = varied_model(cfg, nc=3, size=64)
    x = torch.rand(2, 3, 64, 64) * 255
    qat = prepare_qat(model, SCHEMES["rknn"], x[:1])
    head_silus = sum(isinstance(m, torch.nn.SiLU) for m in model.detect.modules())
    assert sum(isinstance(m, QuantSiLU) for m in qat.detect.modules()) == head_silus
    assert (head_silus > 0) == (act == "silu")
    head_convs = [m for m in qat.detect.modules() if isinstance(m, QuantConv2d)]
    assert len(head_convs) == 3 * 8 and all(c.input_quantizer is not None for c in head_convs)
    qat.train()(x)
    graph = onnx.load_from_string(_onnx(ExportModel(qat.eval(), "per-level"), x)).graph
    unquantised = _unquantised_ops(graph)
    assert unquantised == [], f"ops a toolchain would run in float: {unquantised}"
    expected, got, _ = _export_and_run(qat, x, optimise=False)
    for level in range(3):
        for k, step in enumerate(_steps(qat.detect, level)):
            diff = np.abs(expected[3 * level + k] - got[3 * level + k]).max()
            assert diff <= step * 1.001, f"level {level} output {k}: max |diff| {diff:.3g} > one step {step:.3g}"


@pytest.mark.parametrize("cfg", ["models/pai_yoloxs_asff.yaml", "models/pai_yoloxs_asff_sim.yaml"])
def test_asff_necks_are_quantised_where_toolchains_fuse(cfg):
    """ASFF fuses pyramid levels through max pooling, nearest upsampling, slices and a split of its softmax
    weights: the traced neck quantises every op after them (their outputs written again on the grid they keep,
    the same scale and zero point, so each conv, add and mul reads a DequantizeLinear), every bias is on its
    input's grid, and onnxruntime runs the file. (The deep random RepVGG backbone flips near-ties of float
    sums one step between torch and onnxruntime, which later layers grow: outputs are compared on trained
    and shallower models, in test_qat_toolchains and above.)"""
    model = varied_model(cfg, nc=3, size=64)
    x = torch.rand(2, 3, 64, 64) * 255
    qat = prepare_qat(model, SCHEMES["qdq"], x[:1])
    assert sum(isinstance(m, SameGrid) for m in qat.body.modules()) > 0
    qat.train()(x)
    model_bytes = _onnx(ExportModel(qat.eval(), "per-level"), x)
    graph = onnx.load_from_string(model_bytes).graph
    assert _unquantised_ops(graph) == []
    assert _biases_off_their_grid(graph) == []
    assert _regrids_off_their_source(graph) == []
    assert len(_ort(model_bytes, x)) == 9


def test_a_relu_behind_groupnorm_in_the_head_gets_its_own_grid():
    """TOOD's ConvGN (conv, GroupNorm, ReLU): the GroupNorm does not fold, so the conv keeps its output grid
    and the ReLU's output gets one of its own, which the next conv reads (its int32 bias)."""
    from models.heads.tood import ConvGN

    cfg = {"nc": 3, "depth_multiple": 1.0, "width_multiple": 0.125,
           "backbone": [[-1, 1, "Conv", [128, 3, 2]], [-1, 1, "Conv", [128, 3, 2]], [-1, 1, "C3", [128]],
                        [-1, 1, "Conv", [128, 3, 2]], [-1, 1, "Conv", [128, 3, 2]]],
           "head": [[[2, 3, 4], 1, "TOODHead", ["nc", 1, {"stacked_convs": 2}]]]}
    model = varied_model(cfg, nc=3, size=64)
    qat = prepare_qat(model, SCHEMES["rknn"], torch.rand(1, 3, 64, 64) * 255)
    blocks = [m for m in qat.detect.modules() if isinstance(m, ConvGN)]
    assert blocks and all(b.conv.output is not None for b in blocks)
    assert all(isinstance(b.act, torch.nn.Sequential) and isinstance(b.act[1], ActivationQuantizer)
               and b.act[1] is not b.conv.output for b in blocks if isinstance(b.act[0], torch.nn.ReLU))
    grids = {id(b.act[1]) for b in blocks if isinstance(b.act, torch.nn.Sequential)}
    readers = [m for m in qat.detect.modules() if isinstance(m, QuantConv2d) and id(m.input_quantizer) in grids]
    assert readers  # the convs after the inter convs read their grid


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_fake_quantize_is_quantizelinear_exactly_with_torchs_gradient(scheme):
    """Training and evaluation quantise as ONNX QuantizeLinear computes (x / scale, rounded half to even), so a
    model equals its exported QDQ file run as written bit for bit; torch's kernel multiplies by 1 / scale,
    which rounds some values a step the other way, and such steps grow through a deep model. The gradient
    is torch's: straight through inside the grid, zero outside. Export writes torch's op (Q + DQ)."""
    from utils.quant.fake_quant import _FakeQuantize

    s = SCHEMES[scheme]
    scale, zero_point = 0.38315194845199585, 0 if s.symmetric else 3 + s.qmin // 128  # a scale yoloxn learnt
    g = torch.Generator().manual_seed(0)
    k = torch.arange(-60, 60, dtype=torch.float32) + 0.5
    ties = k * torch.tensor(scale)  # values on a previous grid land on such exact half steps of the next one
    ties = ties[ties / scale == k]
    x = torch.cat([torch.randn(1000, generator=g) * 30,  # beyond the grid on both sides: clamped, zero gradient
                   ties, torch.randn(100_000, generator=g)])
    b = x.clone().requires_grad_(True)
    got = _FakeQuantize.apply(b, torch.tensor(scale), torch.tensor(zero_point, dtype=torch.int32), s.qmin, s.qmax)
    onnx_qdq = _quantize_dequantize_in_ort(x.numpy(), scale, zero_point, unsigned=s.qmin == 0)
    assert np.array_equal(got.detach().numpy(), onnx_qdq)
    torchs = torch.fake_quantize_per_tensor_affine(x, scale, zero_point, s.qmin, s.qmax)
    assert (torchs != got).any()  # the case this guards against: torch's kernel rounds some ties the other way
    assert (torchs - got).abs().max() <= scale * 1.0001
    a = x.clone().requires_grad_(True)
    upstream = torch.randn(x.shape, generator=g)
    torch.fake_quantize_per_tensor_affine(a, scale, zero_point, s.qmin, s.qmax).backward(upstream)
    got.backward(upstream)
    inv = torch.tensor(1.0) / torch.tensor(scale)
    same = torch.round(x / scale) == torch.round(x * inv)  # where the two roundings agree (at a tie on the
    # grid's edge one keeps the gradient and the other does not, though the clamped values are equal)
    assert torch.equal(b.grad[same], a.grad[same]) and (a.grad == 0).any() and (a.grad != 0).any()
    quantiser = ActivationQuantizer(s).train()
    y = quantiser(b)  # training mode: the vectorised path
    assert y.grad_fn is not None and type(y.grad_fn).__name__ == "_FakeQuantizeBackward"


def _constants(graph) -> dict:
    """Tensor name -> value of a graph's initializers and Constant nodes."""
    constants = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    constants.update({n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t)
                      for n in graph.node if n.op_type == "Constant"})
    return constants


def _biases_off_their_grid(graph) -> list[str]:
    """The Convs of a QDQ graph whose bias is not a whole multiple of input scale x weight scale (per output
    channel), read from the file as a toolchain reads them: the DequantizeLinear before each input."""
    constants, producer = _constants(graph), {o: n for n in graph.node for o in n.output}
    off = []
    for conv in (n for n in graph.node if n.op_type == "Conv" and len(n.input) == 3):
        dq_x, dq_w = producer.get(conv.input[0]), producer.get(conv.input[1])
        if dq_x is None or dq_w is None or dq_x.op_type != "DequantizeLinear" or dq_w.op_type != "DequantizeLinear":
            off.append(f"{conv.name} (input or weight not from a DequantizeLinear)")
            continue
        grid = constants[dq_x.input[1]].astype(np.float64) * constants[dq_w.input[1]].astype(np.float64)
        k = constants[conv.input[2]].astype(np.float64) / grid
        off_by = np.abs(k - k.round()) - 4e-7 * np.abs(k)  # float32 holds a bias of k steps to about k / 2^23
        if off_by.max() > 1e-2:
            off.append(f"{conv.name} (bias off its grid by {off_by.max():.2f} steps)")
    return off


GRID_KEEPING_OPS = ("MaxPool", "Resize", "Slice", "Split", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze")


def _regrids_off_their_source(graph) -> list[str]:
    """The QuantizeLinears after a grid-keeping op (max pooling, nearest resizing, slices...) whose scale or zero
    point differs from the DequantizeLinear that op reads: there the grid was written again, and must be the same."""
    constants, producer = _constants(graph), {o: n for n in graph.node for o in n.output}
    off = []
    for q in (n for n in graph.node if n.op_type == "QuantizeLinear"):
        source = producer.get(q.input[0])
        while source is not None and source.op_type in GRID_KEEPING_OPS:
            source = producer.get(source.input[0])
        if source is None or source.op_type != "DequantizeLinear" or producer.get(q.input[0]) is source:
            continue
        if any(not np.array_equal(constants[a], constants[b]) for a, b in zip(q.input[1:], source.input[1:])):
            off.append(f"{q.name} after {producer[q.input[0]].op_type}")
    return off


def test_conv_bias_is_int32_on_the_input_times_weight_grid():
    """Toolchains hold a conv's bias in int32 at input scale x weight scale: every traced conv is linked to its
    input's quantiser (through slices and pooling), its bias lands on that grid, and where the input nearly
    vanishes (a tiny grid) a large bias saturates at the int32 limit, as in the toolchain."""
    from utils.quant.fake_quant import BIAS_QMAX, quantize_bias

    model = varied_model("models/yoloxn.yaml", nc=3, size=64)
    x = torch.rand(2, 3, 64, 64) * 255
    qat = prepare_qat(model, SCHEMES["rknn"], x[:1])
    assert not any(bool(q.initialised) for q in qat.quantizers())  # linking the head observed nothing
    qat.train()(x)
    qat.eval()
    convs = [m for m in qat.body.modules() if isinstance(m, QuantConv2d)]
    assert convs and all(c.input_quantizer is not None for c in convs)
    # the head's prediction convs (not traced) read the neck's quantised outputs: linked by running one example
    head_convs = [m for m in qat.head.modules() if isinstance(m, QuantConv2d)]
    assert len(head_convs) == 9 and all(c.input_quantizer is not None for c in head_convs)
    neck = {id(q) for q in qat.body.modules() if isinstance(q, ActivationQuantizer)}
    assert all(id(c.input_quantizer) in neck for c in head_convs)
    for conv in (convs[3], head_convs[0]):
        b = quantize_bias(conv.bias, conv.input_quantizer.grid()[0], weight_scales(conv.weight))
        k = b / (conv.input_quantizer.grid()[0] * weight_scales(conv.weight))
        torch.testing.assert_close(k, k.round(), rtol=0, atol=1e-3)
    assert not any("_input" in k for k in qat.state_dict())  # a link, not a parameter: checkpoints unchanged
    # as a toolchain reads the file: the grid of each conv's input is the DequantizeLinear before it (after a
    # SiLU, its Mul's), and every bias is a whole number of steps of it
    graph = onnx.load_from_string(_onnx(ExportModel(qat, "per-level"), x[:1])).graph
    assert _biases_off_their_grid(graph) == []
    tiny = quantize_bias(torch.tensor([1e3, -1e3, 0.5]), 1e-9, torch.tensor([1e-3, 1e-3, 1e-3]))
    assert tiny[0] == pytest.approx(BIAS_QMAX * 1e-12, rel=1e-6) and tiny[1] == pytest.approx(-(BIAS_QMAX + 1) * 1e-12, rel=1e-6)
    bias = torch.tensor([0.3], requires_grad=True)
    quantize_bias(bias, 0.1, torch.tensor([0.01])).sum().backward()
    assert bias.grad.item() == 1.0  # straight through
