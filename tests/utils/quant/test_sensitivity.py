"""Per-layer int8 sensitivity (utils/quant/sensitivity.py, layer_groups.py) and export.py --sensitivity:
a layer made fragile on purpose ranks first; the greedy hybrid keeps the cheapest harmful groups in float
until the measured loss is within budget; the files and toolchain terms are written."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from tests.support import varied_model, write_demo_dataset
from utils.checkpoints import save_checkpoint
from utils.quant.layer_groups import OUTPUTS, group_name, layer_groups, node_macs
from utils.quant.sensitivity import Measure, analyse_sensitivity, normalised_error

SIZE = 64
CFG = {"nc": 8, "depth_multiple": 1.0, "width_multiple": 0.125,
       "backbone": [[-1, 1, "Conv", [128, 3, 2]], [-1, 1, "Conv", [128, 3, 2]], [-1, 1, "C3", [128]],
                    [-1, 1, "Conv", [128, 3, 2]], [-1, 1, "Conv", [128, 3, 2]]],
       "head": [[[2, 3, 4], 1, "YOLOXHead", ["nc", 1]]]}
FRAGILE = "model.2"  # the C3 whose inner activations span a huge range


def fragile_model():
    """A small detector whose C3 (row 2) carries one inner channel 1000x larger than the rest, compensated by
    the next conv: the float model is unchanged in kind, but one per-tensor int8 scale must cover both, so the
    other channels of that tensor round to zero."""
    model = varied_model(CFG, nc=8, size=SIZE)
    bottleneck = model.model[2].m[0]
    with torch.no_grad():
        bottleneck.conv1.bn.weight[0] *= 1000
        bottleneck.conv1.bn.bias[0] *= 1000
        bottleneck.conv2.conv.weight[:, 0] /= 1000
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """export.py --deploy --int8 --sensitivity on the fragile model and a tiny generated dataset."""
    from utils.export.exporter import run_export
    from utils.export.options import DatasetImages, ExportOptions

    tmp = tmp_path_factory.mktemp("sens")
    data = write_demo_dataset(tmp, n_train=6, n_val=4, img_size=(SIZE, SIZE))
    model = fragile_model()
    weights = save_checkpoint(tmp / "fragile.pt", {"model": model.state_dict(), "yaml": model.yaml})
    opts = ExportOptions(weights=weights, deploy=True, img_size=SIZE, opset=13, int8=True, sensitivity=True,
                         images=DatasetImages(str(data), calibration=6), report=False)
    return run_export(opts)


def test_layer_groups_follow_yaml_rows_and_price_convs(tmp_path):
    from utils.export.exporter import run_export
    from utils.export.options import ExportOptions

    model = fragile_model()
    weights = save_checkpoint(tmp_path / "m.pt", {"model": model.state_dict(), "yaml": model.yaml})
    path = run_export(ExportOptions(weights=weights, deploy=True, img_size=SIZE, opset=13, report=False))["onnx"]
    proto = onnx.load(str(path))
    groups = {g.name: g for g in layer_groups(proto)}
    assert {"model.0", "model.1", "model.2", "model.3", "model.4"} <= set(groups)
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    assert sum(len(g.nodes) for g in groups.values()) == sum(n.op_type not in ("Constant", "Identity")
                                                             for n in proto.graph.node)
    # row 0: a 3x3 stride-2 conv, 3 -> 16 channels, on a 64 px input: 32 * 32 * 16 outputs of 3 * 3 * 3 MACs
    assert groups["model.0"].macs == 32 * 32 * 16 * 27
    assert sum(g.macs for g in groups.values()) == sum(node_macs(proto).values()) > 0
    assert len(node_macs(proto)) == len(convs)


def test_group_names():
    assert group_name("/model.12/cv1/conv/Conv", "model.24") == "model.12"
    assert group_name("/model.24/cls_convs.0/0/conv/Conv", "model.24") == "model.24/cls_convs.0"
    assert group_name("/cls_preds.0/Conv", "model.24") == "cls_preds.0"
    assert group_name("/Sigmoid_3", "model.24") == OUTPUTS


def test_output_error_is_relative_to_the_spread_and_weighted_by_score():
    rng = np.random.default_rng(0)
    want = rng.normal(10, 2, (2, 50, 4))
    got = want + rng.normal(0, 0.2, want.shape)
    rms = np.sqrt(np.mean((got - want) ** 2))
    assert normalised_error(got, want) == pytest.approx(rms / want.std())
    assert normalised_error(want, want) == 0
    scores = np.where(np.arange(50) < 25, 0.9, 0.0)[None].repeat(2, 0)  # half the boxes are background
    wild = got.copy()
    wild[:, 25:] = 500.0  # a background box may go anywhere: no detection keeps it
    kept = got[:, :25]
    weighted = normalised_error(wild, want, weight=scores)
    assert weighted == pytest.approx(np.sqrt(np.mean((kept - want[:, :25]) ** 2)) / want[:, :25].std())
    assert normalised_error(wild, want) > 50 * weighted


def test_fragile_layer_ranks_first(exported):
    report = exported["sensitivity"]
    ranked = [r.group.name for r in report.groups]
    assert ranked[0] == FRAGILE, report.table()
    fragile = report.groups[0].measure
    others = [r.measure.error for r in report.groups[1:]]
    assert fragile.error > 3 * max(others), report.table()
    assert report.groups[0].group.description == "C3"
    text = Path(exported["sensitivity_text"]).read_text()
    assert f"| 1 | {FRAGILE} | C3 |" in text
    terms = json.loads(Path(exported["hybrid_terms"]).read_text())
    assert terms["onnxruntime"]["nodes_to_exclude"] == (report.hybrid.exclude if report.hybrid else [])


def test_only_and_exclude_reach_onnxruntime(tmp_path, exported):
    """quantize_int8(only=...) puts QDQ on that group alone; exclude=... keeps it without any."""
    from utils.export.int8 import quantize_int8

    fp32 = exported["onnx"]
    group = next(r.group for r in exported["sensitivity"].groups if r.group.name == FRAGILE)
    cache = tmp_path / "ranges.json"
    images = np.random.default_rng(0).uniform(0, 255, (2, 3, SIZE, SIZE)).astype(np.float32)
    full = onnx.load(str(quantize_int8(fp32, tmp_path / "full.onnx", images, calibration_cache=cache)))
    only = onnx.load(str(quantize_int8(fp32, tmp_path / "only.onnx", images, only=group.nodes, calibration_cache=cache)))
    without = onnx.load(str(quantize_int8(fp32, tmp_path / "without.onnx", images, exclude=group.nodes,
                                          calibration_cache=cache)))

    def quantised_convs(m):  # convs whose weights are int8 (dequantised into them)
        produced = {o: n.op_type for n in m.graph.node for o in n.output}
        return {n.name for n in m.graph.node if n.op_type == "Conv" and produced.get(n.input[1]) == "DequantizeLinear"}

    in_group = {n for n in group.nodes if "Conv" in n}
    assert in_group <= quantised_convs(full)
    assert quantised_convs(only) == in_group
    assert not (quantised_convs(without) & in_group) and quantised_convs(without) == quantised_convs(full) - in_group


class _Fake:
    """quantize / judge stand-ins: the 'file' records which nodes are int8; mAP falls 0.1 for each quantised
    harmful group, 0.0005 for any other."""

    def __init__(self, fp32, groups, harmful):
        self.fp32, self.groups, self.harmful = Path(fp32), groups, harmful

    def quantize(self, fp32, path, images, only=None, exclude=(), calibration_cache=None):
        nodes = [n for g in self.groups for n in g.nodes]
        q = set(only) if only is not None else set(nodes) - set(exclude)
        Path(path).write_text(json.dumps(sorted(q)))
        return Path(path)

    def judge(self, path, kernels=False):
        q = set() if Path(path) == self.fp32 else set(json.loads(Path(path).read_text()))
        loss = sum((0.1 if g.name in self.harmful else 0.0005) for g in self.groups if set(g.nodes) & q)
        return Measure(0.9 - loss, 0.5 - loss, loss)


def test_greedy_hybrid_keeps_the_harmful_groups_in_float(tmp_path, monkeypatch, exported):
    from utils.quant import sensitivity

    fp32 = Path(exported["onnx"])
    groups = layer_groups(onnx.load(str(fp32)))
    harmful = {"model.2", "model.4"}
    fake = _Fake(fp32, groups, harmful)
    monkeypatch.setattr(sensitivity, "latency_ms", lambda path, image, runs=30: 1.0)
    images = np.zeros((1, 3, SIZE, SIZE), np.float32)
    report = analyse_sensitivity(fp32, images, fake.judge, tmp_path, budget=0.015, quantize=fake.quantize)
    assert {r.group.name for r in report.groups[:2]} == harmful
    assert report.drop(report.int8) == pytest.approx(0.2 + 0.0005 * (len(groups) - 2))
    hybrid = report.hybrid
    assert hybrid is not None and hybrid.within_budget
    assert set(hybrid.float_groups) == harmful
    assert report.drop(hybrid.measure) <= 0.015
    assert hybrid.path == tmp_path / f"{fp32.stem}.hybrid.int8.onnx" and hybrid.path.is_file()
    assert not list(tmp_path.glob("*.hybrid1.int8.onnx"))  # the tried hybrids that lost are removed
    # a budget nothing meets: the best hybrid measured is kept and said to miss it
    report = analyse_sensitivity(fp32, images, fake.judge, tmp_path, budget=0.0, quantize=fake.quantize)
    assert report.hybrid is not None and not report.hybrid.within_budget
    assert "NOT within" in report.recommendation()


def test_no_hybrid_when_int8_is_within_budget(tmp_path, monkeypatch, exported):
    from utils.quant import sensitivity

    fp32 = Path(exported["onnx"])
    fake = _Fake(fp32, layer_groups(onnx.load(str(fp32))), harmful=set())
    monkeypatch.setattr(sensitivity, "latency_ms", lambda path, image, runs=30: 1.0)
    report = analyse_sensitivity(fp32, np.zeros((1, 3, SIZE, SIZE), np.float32), fake.judge, tmp_path, budget=0.1,
                                 quantize=fake.quantize)
    assert report.hybrid is None and "no layer needs float" in report.recommendation()


@pytest.mark.parametrize("kwargs, message", [
    ({"sensitivity": True}, "add --int8"),
    ({"sensitivity": True, "int8": True, "include": ("openvino",)}, "add --include onnx"),
    ({"sensitivity": True, "int8": True, "img_size": (64, 96)}, "square --img-size"),
    ({"sensitivity": True, "int8": True, "hybrid_budget": 1.5}, "--hybrid-budget"),
])
def test_sensitivity_options_are_checked(kwargs, message):
    from utils.export.options import DatasetImages, ExportOptions

    with pytest.raises(ValueError, match=message):
        ExportOptions(cfg="models/yoloxn.yaml", images=DatasetImages("data/demo.yaml"), **kwargs)


def test_openvino_ignored_scope_takes_effect(tmp_path, exported):
    """The hybrid as NNCF's ignored scope: resolved to the IR's own op names, and those convs keep float weights."""
    pytest.importorskip("openvino", reason="openvino not installed (pip install openvino nncf)")
    pytest.importorskip("nncf", reason="nncf not installed (pip install openvino nncf)")
    import openvino as ov

    from utils.export.openvino import export_openvino, quantize_openvino
    from utils.quant.hybrid_config import count_ops, openvino_ignored_names

    fp32 = exported["onnx"]
    group = next(r.group for r in exported["sensitivity"].groups if r.group.name == FRAGILE)
    xml = export_openvino(fp32, tmp_path / "m.xml", {})
    names = openvino_ignored_names(ov.Core().read_model(str(xml)), onnx.load(str(fp32)), group.nodes)
    convs = [n for n in group.nodes if n.endswith("/Conv")]
    assert {f"{c}/WithoutBiases" for c in convs} <= set(names)  # OpenVINO splits a Conv into conv + bias Add
    images = np.random.default_rng(0).uniform(0, 255, (4, 3, SIZE, SIZE)).astype(np.float32)
    full = ov.Core().read_model(str(quantize_openvino(xml, tmp_path / "full.xml", images)))
    hybrid = ov.Core().read_model(str(quantize_openvino(xml, tmp_path / "hybrid.xml", images, ignored=names)))
    assert count_ops(hybrid, "FakeQuantize") < count_ops(full, "FakeQuantize")

    def int8_weight_convs(model):  # convolutions whose weights pass through a FakeQuantize (or are int8 constants)
        out = set()
        for op in model.get_ordered_ops():
            if op.get_type_name() == "Convolution":
                src = op.input_value(1).get_node()
                while src.get_type_name() in ("Convert", "Subtract", "Multiply", "Reshape"):
                    src = src.input_value(0).get_node()
                if src.get_type_name() == "FakeQuantize" or src.get_element_type().get_type_name().startswith(("i8", "u8")):
                    out.add(op.get_friendly_name())
        return out

    ignored_convs = {f"{c}/WithoutBiases" for c in convs}
    assert ignored_convs <= int8_weight_convs(full)
    assert not ignored_convs & int8_weight_convs(hybrid)
    with pytest.raises(Exception, match="not found|ignored"):  # NNCF validates the names: a wrong one fails loudly
        quantize_openvino(xml, tmp_path / "bad.xml", images, ignored=["/no/such/op"])


def test_rknn_hybrid_takes_effect(tmp_path, exported):
    """The hybrid as rknn-toolkit2's custom_quantize_layers: tensor names step 1 knows, each one reported as
    float16 by rknn's compiler, and the fragile layer's error gone from the simulator's outputs."""
    pytest.importorskip("rknn.api", reason="rknn-toolkit2 not installed (its own environment: README)")
    from utils.export.compare import cosine
    from utils.export.rknn import build_rknn, build_rknn_hybrid

    fp32 = exported["onnx"]
    group = next(r.group for r in exported["sensitivity"].groups if r.group.name == FRAGILE)
    images = np.random.default_rng(0).uniform(0, 255, (4, 3, SIZE, SIZE)).astype(np.float32)
    rknn, tensors, reported = build_rknn_hybrid(fp32, tmp_path / "h.rknn", "rk3588", images, group.nodes)
    try:
        hybrid = rknn.run(images[:1])
    finally:
        rknn.release()
    assert tensors and all(t.startswith(f"/{FRAGILE}/") for t in tensors)
    assert "/model.2/conv3/conv/Conv_output_0" in tensors
    assert reported == len(tensors)
    assert (tmp_path / "h.rknn").is_file()
    full = build_rknn(fp32, tmp_path / "f.rknn", "rk3588", images)
    try:
        int8 = full.run(images[:1])
    finally:
        full.release()
    import onnxruntime as ort

    session = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    want = session.run(None, {session.get_inputs()[0].name: images[:1]})
    err_int8 = sum(1 - cosine(a, b) for a, b in zip(int8, want))
    err_hybrid = sum(1 - cosine(a, b) for a, b in zip(hybrid, want))
    assert err_hybrid < err_int8


def _export_with_toolchain(toolchain: str, tmp_path) -> dict:
    """export --include onnx <toolchain> --deploy --int8 --sensitivity of the fragile model on a tiny dataset."""
    from utils.export.exporter import run_export
    from utils.export.options import DatasetImages, ExportOptions

    data = write_demo_dataset(tmp_path, n_train=4, n_val=2, img_size=(SIZE, SIZE))
    model = fragile_model()
    weights = save_checkpoint(tmp_path / "fragile.pt", {"model": model.state_dict(), "yaml": model.yaml})
    return run_export(ExportOptions(weights=weights, deploy=True, img_size=SIZE, opset=13, int8=True, sensitivity=True,
                                    include=("onnx", toolchain), images=DatasetImages(str(data), calibration=4),
                                    report=False))


@pytest.mark.parametrize("toolchain, package", [("openvino", "nncf"), ("rknn", "rknn.api")])
def test_sensitivity_measures_each_toolchains_int8_model(toolchain, package, tmp_path):
    """export.py --include onnx <toolchain> --int8 --sensitivity: the toolchain's own int8 model is measured on
    the val split next to float, and the table says so."""
    pytest.importorskip(package, reason=f"{package} not installed (README: OpenVINO and RKNN)")
    results = _export_with_toolchain(toolchain, tmp_path)
    report = results["sensitivity"]
    measured = report.toolchains[toolchain]
    assert isinstance(measured.int8, Measure) and measured.hybrid is None  # a random model: nothing to lose
    assert f"| {toolchain} |" in Path(results["sensitivity_text"]).read_text()
    if toolchain == "openvino":
        assert set(measured.latency_ms) == {"fp32", "int8"} and all(v > 0 for v in measured.latency_ms.values())


@pytest.mark.parametrize("names, head", [
    (["/model.24/cls_convs.0/Conv", "/model.24/reg_convs.0/Conv", "/model.3/Conv"], "model.24"),  # a head row
    (["/model.26/convs.0/Conv", "/model.26/convs.1/Conv", "/gfl_cls.0/Conv"], None),  # a neck block's parts
    (["/model.4/conv/Conv", "/model.4/act/Sigmoid"], None),
])
def test_only_a_detect_row_is_split(names, head):
    from onnx import helper

    from utils.quant.layer_groups import _head_row

    nodes = [helper.make_node("Identity", ["x"], [f"y{i}"], name=n) for i, n in enumerate(names)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])], [])
    assert _head_row(helper.make_model(graph)) == head


@pytest.mark.parametrize("toolchain, package", [("openvino", "nncf"), ("rknn", "rknn.api")])
def test_a_recommended_hybrid_is_applied_and_proven_in_each_toolchain(toolchain, package, tmp_path, monkeypatch):
    """With a hybrid recommended (forced here: a random model loses no mAP), the exporter applies it in the
    toolchain's own terms, measures it and records the proof: FakeQuantize ops removed (OpenVINO), every given
    tensor named float16 by rknn's compiler (RKNN)."""
    pytest.importorskip(package, reason=f"{package} not installed (README: OpenVINO and RKNN)")
    from utils.export.int8 import quantize_int8
    from utils.quant import sensitivity
    from utils.quant.sensitivity import Hybrid

    real = sensitivity.analyse_sensitivity

    def forcing(fp32_path, images, judge, workdir, **kwargs):
        report = real(fp32_path, images, judge, workdir, **kwargs)
        group = next(r for r in report.groups if r.group.name == FRAGILE)
        path = quantize_int8(fp32_path, Path(workdir) / "forced.hybrid.int8.onnx", images, exclude=group.group.nodes)
        report.hybrid = Hybrid([FRAGILE], list(group.group.nodes), group.share, judge(path), path, True)
        return report

    monkeypatch.setattr(sensitivity, "analyse_sensitivity", forcing)
    results = _export_with_toolchain(toolchain, tmp_path)
    measured = results["sensitivity"].toolchains[toolchain]
    assert isinstance(measured.hybrid, Measure)
    terms = json.loads(Path(results["hybrid_terms"]).read_text())
    if toolchain == "openvino":
        before, after = map(int, measured.effect.removeprefix("FakeQuantize ").split(" -> "))
        assert after < before and terms["openvino"]["ignored_scope"]["names"]
        assert results["openvino_hybrid_int8"].is_file() and "hybrid" in measured.latency_ms
    else:
        tensors = terms["rknn"]["custom_quantize_layers"]
        assert tensors and set(tensors.values()) == {"float16"}
        assert measured.effect == f"{len(tensors)} of {len(tensors)} tensors compiled as float16"
        assert results["rknn_hybrid"].is_file()
