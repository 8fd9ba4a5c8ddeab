"""export.py and utils/export_*.py, utils/export/onnx_file.py, utils/export/npu_report.py on small models at 160 px."""
import logging

import numpy as np
import onnx
import pytest
import torch
import yaml
from torch import nn

import export
import val
from models.common import Focus
from models.yolo import Model
from models import yolox_official
from utils.checkpoints import save_checkpoint
from utils.data.demo import DEMO_NAMES, generate_demo_dataset
from utils.export.layouts import ExportModel, decode_onnx_outputs, decode_outputs, output_names
from utils.export.rewrite import FocusConv, prepare_for_export
from utils.export.torchscript import load_torchscript, read_torchscript_metadata
from utils.export.verify import ort_session, run_onnx
from utils.export.npu_report import npu_report
from utils.export.onnx_file import OpsetError, export_onnx, read_metadata

pytest.importorskip("onnxruntime")
IMGSZ = 160
NC = 3


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def varied(cfg, nc=NC, size=IMGSZ):
    """A random model with varied outputs: BatchNorm statistics from one train-mode pass over random
    images (a fresh model's features vanish), prediction convs scaled to give logits of order 1."""
    torch.manual_seed(0)
    model = Model(cfg, nc=nc)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        model.train()(torch.rand(2, 3, size, size) * 255)
    d = model.detect
    for conv, std in [(c, 0.01) for c in list(d.cls_preds) + list(d.obj_preds)] + [(c, 0.003) for c in d.reg_preds]:
        nn.init.normal_(conv.weight, std=std)
        nn.init.normal_(conv.bias, std=0.5)
    return model.eval()


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """Project checkpoints (as the trainer writes them) of varied yoloxn and yoloxs_rslu: {name: (path, model)}."""
    root = tmp_path_factory.mktemp("weights")
    out = {}
    for name in ("yoloxn", "yoloxs_rslu"):
        model = varied(f"models/{name}.yaml")
        path = save_checkpoint(root / f"{name}.pt", {"model": model.state_dict(), "yaml": model.yaml,
                                                     "names": ["a", "b", "c"]})
        out[name] = (path, model)
    return out


def image_batch(n=1, size=IMGSZ, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 255


def ort_decoded(path, x):
    """The file's outputs for x, through the shared post-processing, as val.py / detect.py read them."""
    session = ort_session(path)
    return decode_onnx_outputs(run_onnx(session, x), session.get_modelmeta().custom_metadata_map)


# ---- the matrix: opset 10 / 13, simplify, deploy layouts, dynamic axes -------------------------------------
CASES = [  # (model, opset, simplify, deploy_outputs or None (no --deploy) or "per-level", dynamic)
    ("yoloxn", 10, False, None, ()),
    ("yoloxn", 13, True, None, ("batch",)),
    ("yoloxn", 13, False, "split", ("batch", "hw")),
    ("yoloxn", 13, True, "per-level", ("hw",)),
    ("yoloxs_rslu", 10, True, "per-level", ()),
    ("yoloxs_rslu", 13, False, "split", ("batch",)),
]


@pytest.mark.parametrize("name,opset,simplify,layout,dynamic", CASES,
                         ids=[f"{c[0]}-op{c[1]}-{'sim' if c[2] else 'nosim'}-{c[3] or 'decoded'}-{'+'.join(c[4]) or 'static'}"
                              for c in CASES])
def test_export_matches_torch(ckpts, tmp_path, name, opset, simplify, layout, dynamic):
    path, model = ckpts[name]
    res = export.run(weights=path, img_size=IMGSZ, opset=opset, simplify=simplify, deploy=layout is not None,
                     deploy_outputs=layout, dynamic=dynamic, output=tmp_path / "m.onnx")
    f = res["onnx"]
    assert res["verification"][0].ok and res["layout"] == (layout or "decoded")
    onnx_model = onnx.load(str(f))
    assert onnx_model.opset_import[0].version == opset
    ops = {n.op_type for n in onnx_model.graph.node}
    assert "ScatterND" not in ops and not ops & {"Silu", "Swish", "HardSwish"}  # SiLU is Sigmoid + Mul
    if layout == "per-level" and not dynamic and simplify:
        assert ops - {"Constant"} <= {"Conv", "Relu", "Sigmoid", "Mul", "Add", "Concat", "MaxPool", "Resize", "Slice"}
    meta = read_metadata(onnx_model)
    assert yaml.safe_load(meta["names"]) == ["a", "b", "c"] and yaml.safe_load(meta["stride"]) == [8, 16, 32]
    assert meta["layout"] == (layout or "decoded") and meta["yaml"] == f"{name}.yaml"
    assert yaml.safe_load(meta["imgsz"]) == [IMGSZ, IMGSZ] and meta["letterbox"] == "center"
    assert [o.name for o in onnx_model.graph.output] == output_names(meta["layout"], [8, 16, 32])
    # our own check, on another input: the decoded outputs equal the eval output of the model as loaded
    sizes = [(2 if "batch" in dynamic else 1, IMGSZ)] + ([(1, IMGSZ + 32)] if "hw" in dynamic else [])
    for n, size in sizes:
        x = image_batch(n, size)
        with torch.no_grad():
            want = model(x)
        got = ort_decoded(f, x)
        assert got.shape == want.shape == (n, sum((size // s) ** 2 for s in (8, 16, 32)), 5 + NC)
        if layout == "split":  # obj = 1, cls = obj * cls: the same scores
            want = torch.cat((want[..., :4], torch.ones_like(want[..., 4:5]), want[..., 5:] * want[..., 4:5]), -1)
        # float32 noise of this deep random net reaches 1e-4 of the range (torch float32 vs float64)
        assert (got[..., :4] - want[..., :4]).abs().max() <= 1e-3 * want[..., :4].abs().max()
        np.testing.assert_allclose(got[..., 4:], want[..., 4:], atol=1e-3)
        assert want[..., 5:].std() > 0.01  # the model's scores vary: the comparison means something
        if size == IMGSZ:  # val.py reads every layout through the same decoding
            onnx_model = val.OnnxModel(f, IMGSZ)
            assert onnx_model.nc == NC and onnx_model.names == ["a", "b", "c"]
            torch.testing.assert_close(onnx_model(x), got)


def test_seed_command(ckpts, tmp_path, monkeypatch, caplog):
    """python export.py --weights ./yolox_rslu.pt --include onnx --opset 10 --simplify --deploy"""
    path, _ = ckpts["yoloxs_rslu"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "yolox_rslu.pt").write_bytes(path.read_bytes())
    with caplog.at_level(logging.INFO, logger="yolox5.export"):
        res = export.main(["--weights", "./yolox_rslu.pt", "--include", "onnx", "--opset", "10", "--simplify",
                           "--deploy", "--img-size", str(IMGSZ)])
    assert res["onnx"].resolve() == (tmp_path / "yolox_rslu.onnx").resolve() and res["layout"] == "per-level"
    text = caplog.text
    assert "Verification of yolox_rslu.onnx" in text and "PASSED" in text and "NPU readiness report" in text
    report = res["report"]
    # yoloxs_rslu: 42 ReLU convs fuse; the SiLU convs (stride-2 convs, SPP, stems, C3 outputs) stay pairs
    assert (report.conv_relu, report.silu, report.silu_after_conv, report.lone_sigmoid) == (42, 32, 32, 6)
    assert report.outside == {"Slice": 4} and report.input_slices == 4  # Focus: --focus-conv removes them


# ---- Focus as convolutions ---------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["s2d", "fold"])
def test_focus_conv_equals_focus(mode):
    torch.manual_seed(0)
    focus = Focus(3, 16, 3, 1, act="relu").eval()
    focus.conv.bn.running_mean.normal_()
    focus.conv.bn.running_var.uniform_(0.5, 2)
    x = torch.rand(2, 3, 64, 96) * 255
    with torch.no_grad():
        want, got = focus(x), FocusConv(focus, mode)(x)
    if mode == "s2d":
        assert torch.equal(got, want)  # one-hot weights: bit-identical
    else:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


@pytest.mark.parametrize("mode", ["s2d", "fold"])
def test_focus_conv_graph(ckpts, tmp_path, mode):
    path, model = ckpts["yoloxn"]
    res = export.run(weights=path, img_size=IMGSZ, opset=10, simplify=True, deploy=True, focus_conv=mode,
                     output=tmp_path / "f.onnx")
    report = res["report"]
    assert report.op_counts["Slice"] == 0 and report.outside == {}  # a conv-only graph
    convs = [n for n in onnx.load(str(res["onnx"])).graph.node if n.op_type == "Conv"]
    first = next(n for n in convs if n.input[0] == "images")
    kernel = [a.ints for a in first.attribute if a.name == "kernel_shape"][0]
    assert list(kernel) == ([2, 2] if mode == "s2d" else [6, 6])
    x = image_batch()
    with torch.no_grad():
        want = model(x)
    got = ort_decoded(res["onnx"], x)
    assert (got[..., :4] - want[..., :4]).abs().max() <= 1e-3 * want[..., :4].abs().max()
    np.testing.assert_allclose(got[..., 4:], want[..., 4:], atol=1e-3)
    prepared = prepare_for_export(model, fuse=True, focus_conv=mode)
    assert isinstance(prepared.model[0], FocusConv) and prepared.model[0].i == 0 and isinstance(model.model[0], Focus)


# ---- the shared decoding -----------------------------------------------------------------------------------
def test_decode_outputs_reproduces_eval_output(ckpts):
    _, model = ckpts["yoloxn"]
    x = image_batch(2)
    with torch.no_grad():
        want = model(x)
        per_level = ExportModel(prepare_for_export(model), "per-level")(x)
        split = ExportModel(prepare_for_export(model), "split")(x)
    assert [tuple(t.shape) for t in per_level[:3]] == [(2, 4, 20, 20), (2, 1, 20, 20), (2, NC, 20, 20)]
    torch.testing.assert_close(decode_outputs([t.numpy() for t in per_level], "per-level", [8, 16, 32]), want)
    boxes, scores = split
    torch.testing.assert_close(decode_outputs(split, "split", [8, 16, 32]),
                               torch.cat((want[..., :4], torch.ones_like(boxes[..., :1]), want[..., 5:] * want[..., 4:5]), -1))
    with pytest.raises(ValueError, match=r"layout 'per-level' has 9 outputs \(reg_s8, obj_s8, cls_s8, .*got 2"):
        decode_outputs(split, "per-level", [8, 16, 32])
    with pytest.raises(ValueError, match="final detections"):
        decode_outputs([None] * 4, "nms", [8, 16, 32])
    with pytest.raises(ValueError, match=r"output layout must be one of .*got 'boxes'"):
        decode_outputs(split, "boxes", [8, 16, 32])


# ---- NMS in the graph ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("dynamic", [(), ("batch",)], ids=["static", "dynamic-batch"])
def test_nms_export(ckpts, tmp_path, dynamic):
    path, model = ckpts["yoloxn"]
    res = export.run(weights=path, img_size=IMGSZ, opset=10, nms=True, max_det=20, conf_thres=0.05, iou_thres=0.5,
                     dynamic=dynamic, output=tmp_path / "e2e.onnx")
    check = res["verification"][0]
    assert check.ok and "unmatched detections (0 near-ties" in check.text()
    session = ort_session(res["onnx"])
    n = 2 if dynamic else 1
    x = image_batch(n, seed=7)  # not the traced input: the number of NMS candidates differs
    num, boxes, scores, classes = run_onnx(session, x)
    assert num.shape == (n, 1) and num.dtype == np.int32 and boxes.shape == (n, 20, 4) and classes.dtype == np.int32
    with torch.no_grad():
        dec = model(x)
    for b in range(n):
        k = int(num[b, 0])
        assert 0 < k <= 20 and (classes[b, k:] == -1).all() and (scores[b, k:] == 0).all() and (boxes[b, k:] == 0).all()
        assert (np.diff(scores[b, :k]) <= 0).all() and (scores[b, :k] > 0.05).all()
        # each detection is an anchor's box and obj * cls score of its class
        xyxy = torch.cat((dec[b, :, :2] - dec[b, :, 2:4] / 2, dec[b, :, :2] + dec[b, :, 2:4] / 2), 1)
        for i in range(k):
            anchor = int((xyxy - torch.from_numpy(boxes[b, i])).abs().max(1).values.argmin())
            assert np.abs(boxes[b, i] - xyxy[anchor].numpy()).max() <= 1e-3 * float(xyxy.abs().max())
            assert scores[b, i] == pytest.approx(float(dec[b, anchor, 4] * dec[b, anchor, 5 + classes[b, i]]), abs=1e-3)
    assert res["report"].outside["NonMaxSuppression"] == 1


# ---- the report on a model whose ops are known --------------------------------------------------------------
class Known(nn.Module):
    """Conv-Relu (fusable), Conv-SiLU (a pair), a Conv read twice then Relu (not fusable), MaxPool, Sigmoid."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Conv2d(3, 4, 3, 1, 1), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1)

    def forward(self, x):
        y = torch.relu(self.c1(x))
        y = nn.functional.silu(self.c2(y))
        z = self.c3(y)
        return torch.sigmoid(nn.functional.max_pool2d(torch.relu(z) + z, 2))


def test_report_counts_known_ops(tmp_path):
    f = export_onnx(Known().eval(), torch.rand(1, 3, 16, 16), tmp_path / "k.onnx", opset=10,
                    output_names=["out"], metadata={"layout": "decoded"})
    r = npu_report(f)
    assert dict(r.op_counts) == {"Conv": 3, "Relu": 2, "Sigmoid": 2, "Mul": 1, "Add": 1, "MaxPool": 1}
    assert (r.conv_relu, r.silu, r.silu_after_conv, r.lone_sigmoid) == (1, 1, 1, 1)
    assert r.params == 3 * 4 * 9 + 4 + 2 * (16 + 4) and r.opset == 10 and r.outside == {}
    assert r.inputs == [("images", [1, 3, 16, 16], "float32")] and r.outputs == [("out", [1, 4, 8, 8], "float32")]
    text = r.text()
    assert "1 Conv+Relu fusable, 1 Sigmoid+Mul (SiLU) pairs (1 after a Conv, not fusable), 1 lone Sigmoid" in text
    assert "ops (10 nodes): Conv 3, Relu 2, Sigmoid 2, Add 1, MaxPool 1, Mul 1" in text


# ---- ops the opset cannot express ---------------------------------------------------------------------------
class SliceWrite(nn.Module):
    def forward(self, x):
        y = x.clone()
        y[..., :2] = y[..., :2] * 2  # the old in-place decode: ScatterND, opset 11
        return y


class Round(nn.Module):
    def forward(self, x):
        return torch.round(x)


@pytest.mark.parametrize("module,message", [
    (SliceWrite(), r"the op 'index_put' \(ONNX ScatterND\) cannot be expressed at opset 10: it needs opset >= 11: "
                   r"export with --opset 11 or higher\. Hint: an in-place slice write"),
    (Round(), r"the op 'round' \(ONNX Round\) cannot be expressed at opset 10: it needs opset >= 11"),
])
def test_op_needing_newer_opset_is_named(tmp_path, module, message):
    with pytest.raises(OpsetError, match=message) as e:
        export_onnx(module, torch.rand(1, 3, 8, 8), tmp_path / "x.onnx", opset=10)
    assert e.value.needed == 11 and e.value.opset == 10
    export_onnx(module, torch.rand(1, 3, 8, 8), tmp_path / "x.onnx", opset=11)  # and 11 works


# ---- other formats, int8, errors ----------------------------------------------------------------------------
def test_torchscript(ckpts, tmp_path):
    path, model = ckpts["yoloxn"]
    res = export.run(weights=path, include=("torchscript",), img_size=IMGSZ, deploy=True, output=tmp_path / "m.onnx")
    f = res["torchscript"]
    assert f.suffix == ".torchscript" and res["verification"][0].ok and "onnx" not in res
    meta = read_torchscript_metadata(f)
    assert meta["layout"] == "per-level" and meta["names"] == ["a", "b", "c"]
    x = image_batch()
    with torch.no_grad():
        got = decode_outputs(load_torchscript(f)(x), meta["layout"], meta["stride"])
        want = model(x)
    assert (got[..., :4] - want[..., :4]).abs().max() <= 1e-3 * want[..., :4].abs().max()
    torch.testing.assert_close(got[..., 4:], want[..., 4:], rtol=0, atol=1e-3)


def test_int8(ckpts, tmp_path):
    root = generate_demo_dataset(tmp_path / "demo", seed=0, n_train=4, n_val=2, img_size=(IMGSZ, IMGSZ), progress=False)
    data = tmp_path / "demo.yaml"
    data.write_text(yaml.safe_dump({"path": str(root), "train": "images/train", "val": "images/val",
                                    "names": list(DEMO_NAMES)}))
    path, _ = ckpts["yoloxn"]
    res = export.run(weights=path, img_size=IMGSZ, deploy=True, simplify=True, int8=True, data=str(data),
                     calib_images=3, output=tmp_path / "m.onnx")
    q = res["int8"]
    assert q.name == "m.int8.onnx" and res["int8_report"].op_counts["QuantizeLinear"] > 50
    meta = read_metadata(onnx.load(str(q)))
    assert meta["layout"] == "per-level" and meta["quantization"].startswith("int8 QDQ") and "3 calibration" in meta["quantization"]
    comparison = res["int8_comparison"]
    lines = {n: (d, r, c) for n, d, r, c in comparison.lines}
    assert set(lines) >= {"reg_s8", "obj_s8", "cls_s8", "decoded boxes (px)", "decoded scores"}
    assert comparison.n_images == 2 and comparison.source == "val images"  # held out: not the calibration images
    agreement = comparison.agreement  # fp32's top-100 detections per image found again by int8
    assert agreement.n_ref == 200 and 0 <= agreement.matched <= 200 and "of fp32's 200 found again" in comparison.text()
    x = image_batch()
    assert ort_decoded(q, x).shape == (1, 525, 5 + NC)
    # the reason for --deploy: one 8-bit scale over box pixels (hundreds) and probabilities crushes the scores
    decoded = export.run(weights=path, img_size=IMGSZ, simplify=True, int8=True, data=str(data), calib_images=3,
                         output=tmp_path / "d.onnx")
    cos_decoded = {n: c for n, _, _, c in decoded["int8_comparison"].lines}["decoded scores"]
    assert cos_decoded < 0.5 < 0.8 < lines["decoded scores"][2]
    # val.py evaluates the int8 file like any ONNX file (a random 3-class model on 8 classes: only that it runs)
    (p, r, map50, map_, *_), maps, _ = val.run(str(data), weights=str(q), imgsz=IMGSZ, batch_size=2, workers=0,
                                               single_cls=True, save_dir=tmp_path / "val")
    assert 0.0 <= map_ <= 1.0


@pytest.mark.parametrize("kwargs,message", [
    ({"half": True}, r"--half exports float16 for GPU runtimes and needs a CUDA device \(--device 0\)"),
    ({"int8": True}, r"--int8 calibrates on real images: pass --data"),
    ({"deploy_outputs": "split"}, r"--deploy-outputs chooses the outputs of a --deploy export; add --deploy"),
    ({"img_size": (160, 150)}, r"--img-size 160 150: every side must be a multiple of the largest stride 32 \(e.g. 160 160\)"),
    ({"opset": 9}, r"--opset must be an integer in \[10, 20\], got 9"),
    ({"include": ("rknn",), "dynamic": ("hw",)}, r"--include rknn needs a static input shape"),
    ({"nms": True, "include": ("torchscript",)}, r"--nms is ONNX only"),
    ({"nms": True, "int8": True, "data": "x.yaml"}, r"--int8 with --nms would quantise the NMS tail"),
    ({"dynamic": ("width",)}, r"--dynamic takes batch and/or hw, got \['width'\]"),
])
def test_option_errors(ckpts, tmp_path, kwargs, message):
    path, _ = ckpts["yoloxn"]
    with pytest.raises(ValueError, match=message):
        export.run(weights=path, **{"img_size": IMGSZ, "output": tmp_path / "m.onnx", **kwargs})


def test_cli_messages(tmp_path):
    with pytest.raises(SystemExit, match=r"export.py: weights not found: .*missing.pt"):
        export.main(["--weights", str(tmp_path / "missing.pt")])
    opt = export.parse_opt(["--weights", "w.pt", "--dynamic", "--img-size", "480", "640", "--focus-conv"])
    assert opt.dynamic == ["batch"] and opt.img_size == [480, 640] and opt.focus_conv == "s2d"


def test_official_weights_metadata(tmp_path):
    """An official YOLOX .pth exports with the top-left letterbox in its metadata (how it was trained)."""
    model = varied("models/yoloxn.yaml", nc=80)
    f = tmp_path / "yolox_nano.pth"
    torch.save({"model": yolox_official.project_to_official(model.state_dict())}, f)
    res = export.run(weights=f, cfg="models/yoloxn.yaml", img_size=(IMGSZ, 192), output=tmp_path / "o.onnx")
    meta = read_metadata(onnx.load(str(res["onnx"])))
    assert meta["letterbox"] == "topleft" and yaml.safe_load(meta["imgsz"]) == [IMGSZ, 192]
    assert res["report"].inputs[0][1] == [1, 3, IMGSZ, 192]


def test_half_export_machinery(tmp_path, monkeypatch):
    """--half is refused on the CPU (above); the float16 path itself runs on the CPU too (torch and
    onnxruntime both have float16 kernels), so it is exercised here with the device check lifted."""
    check = export._check_options
    monkeypatch.setattr(export, "_check_options", lambda *a: check(*a[:7], False, *a[8:]))
    model = Model("models/yoloxn.yaml", nc=NC)  # fresh BatchNorm: well-conditioned in float16 (varied() is not)
    path = save_checkpoint(tmp_path / "fresh.pt", {"model": model.state_dict(), "yaml": model.yaml})
    res = export.run(weights=path, img_size=IMGSZ, half=True, deploy=True, simplify=True, output=tmp_path / "h.onnx")
    assert res["verification"][0].ok and "float16" in res["verification"][0].what
    assert res["report"].inputs[0][2] == "float16" and res["report"].outputs[0][2] == "float16"
    assert "float16" in read_metadata(onnx.load(str(res["onnx"])))["input"]
