"""utils/export/exporter.py (through export.run, the Python form of export.py's options): every layout at
opsets 10 and 13, simplified or not, static and dynamic, checked against torch; NMS in the graph,
TorchScript, int8; option errors; official weights; float16."""
import json

import numpy as np
import onnx
import pytest
import torch
import yaml

import export
import val
from models import yolox_official
from models.heads.yolox import YOLOXDecoder
from models.yolo import Model
from tests.support import EXPORT_SIZE as IMGSZ, EXPORT_NC as NC, image_batch as images, ort_decoded, varied_model as varied
from utils.checkpoints import save_checkpoint
from utils.data.demo import DEMO_NAMES, generate_demo_dataset
from utils.export import options as export_options
from utils.infer.outputs import OutputFormat, output_names
from utils.export.compare import cosine
from utils.export.int8 import calibration_images, quantize_int8
from utils.export.onnx_file import read_metadata
from utils.export.torchscript import load_torchscript, read_torchscript_metadata
from utils.export.verify import boxes_scores, ort_session, run_onnx
from utils.infer.backends import OnnxModel

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("one_torch_thread")
YOLOX = YOLOXDecoder()


CASES = [  # (model, opset, simplify, deploy_outputs or None (no --deploy) or "per-level", dynamic)
    ("yoloxn", 10, False, None, ()),
    ("yoloxn", 13, True, None, ("batch",)),
    ("yoloxn", 13, False, "split", ("batch", "hw")),
    ("yoloxn", 13, True, "per-level", ("hw",)),
    ("yoloxs_rslu", 10, True, "per-level", ()),
    ("yoloxs_rslu", 13, False, "split", ("batch",)),
    ("yoloxs_rslu", 13, True, "decoded", ()),  # --deploy --deploy-outputs decoded: folded, one output
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
    if layout is not None:  # --deploy folds BatchNorm whatever the outputs
        assert "BatchNormalization" not in ops
    if layout == "per-level" and not dynamic and simplify:
        assert ops - {"Constant"} <= {"Conv", "Relu", "Sigmoid", "Mul", "Add", "Concat", "MaxPool", "Resize", "Slice"}
    meta = read_metadata(onnx_model)
    assert yaml.safe_load(meta["names"]) == ["a", "b", "c"] and yaml.safe_load(meta["stride"]) == [8, 16, 32]
    assert meta["layout"] == (layout or "decoded") and meta["yaml"] == f"{name}.yaml"
    assert yaml.safe_load(meta["imgsz"]) == [IMGSZ, IMGSZ] and meta["letterbox"] == "center"
    assert [o.name for o in onnx_model.graph.output] == output_names(meta["layout"], [8, 16, 32], YOLOX)
    assert meta["decoder"] == "yolox" and meta["decoder_params"] == "{}"
    # our own check, on another input: the decoded outputs equal the eval output of the model as loaded
    sizes = [(2 if "batch" in dynamic else 1, IMGSZ)] + ([(1, IMGSZ + 32)] if "hw" in dynamic else [])
    for n, size in sizes:
        x = images(n, size)
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
            onnx_model = OnnxModel(f, IMGSZ)
            assert onnx_model.nc == NC and onnx_model.names == ["a", "b", "c"]
            torch.testing.assert_close(onnx_model(x), got)


@pytest.mark.parametrize("dynamic", [(), ("batch",)], ids=["static", "dynamic-batch"])
def test_nms_export(ckpts, tmp_path, dynamic):
    path, model = ckpts["yoloxn"]
    res = export.run(weights=path, img_size=IMGSZ, opset=10, nms=True, max_det=20, conf_thres=0.05, iou_thres=0.5,
                     dynamic=dynamic, output=tmp_path / "e2e.onnx")
    check = res["verification"][0]
    assert check.ok and "unmatched detections (0 near-ties" in check.text()
    session = ort_session(res["onnx"])
    n = 2 if dynamic else 1
    x = images(n, seed=7)  # not the traced input: the number of NMS candidates differs
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


def test_torchscript(ckpts, tmp_path):
    path, model = ckpts["yoloxn"]
    res = export.run(weights=path, include=("torchscript",), img_size=IMGSZ, deploy=True, output=tmp_path / "m.onnx")
    f = res["torchscript"]
    assert f.suffix == ".torchscript" and res["verification"][0].ok and "onnx" not in res
    meta = read_torchscript_metadata(f)
    assert meta["layout"] == "per-level" and meta["names"] == ["a", "b", "c"]
    x = images()
    with torch.no_grad():
        got = OutputFormat.from_meta(meta).decode(load_torchscript(f)(x))
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
    assert agreement.n_ref == 200 and agreement.matched > 50 and "of fp32's 200 found again" in comparison.text()
    x = images()
    assert ort_decoded(q, x).shape == (1, 525, 5 + NC)
    # one decoded output: the decoding stays in float, else one 8-bit scale over box pixels (hundreds) and
    # probabilities crushes the scores (what a toolchain that quantises the whole graph does to this layout)
    decoded = export.run(weights=path, img_size=IMGSZ, simplify=True, int8=True, data=str(data), calib_images=3,
                         output=tmp_path / "d.onnx")
    assert "decoding (" in read_metadata(onnx.load(str(decoded["int8"])))["quantization"]
    assert {n: c for n, _, _, c in decoded["int8_comparison"].lines}["decoded scores"] > 0.8
    whole = quantize_int8(decoded["onnx"], tmp_path / "d.all-int8.onnx", calibration_images(data, 3, (IMGSZ, IMGSZ)),
                          float_decode=False)
    held = torch.from_numpy(calibration_images(data, 2, (IMGSZ, IMGSZ), split="val"))
    (_, fp32_scores), (_, int8_scores) = (boxes_scores(OnnxModel(f, IMGSZ, as_written=True)(held))
                                          for f in (decoded["onnx"], whole))
    assert cosine(int8_scores, fp32_scores) < 0.5 < 0.8 < lines["decoded scores"][2]
    # val.py evaluates the int8 file like any ONNX file (a random 3-class model on 8 classes, so as one class):
    # it detects on every val image, where the float32 file does
    for f, name in ((q, "int8"), (res["onnx"], "fp32")):
        val.run(str(data), weights=str(f), imgsz=IMGSZ, batch_size=2, workers=0, single_cls=True, save_json=True,
                save_dir=tmp_path / name)
    rows = {name: json.loads((tmp_path / name / "predictions.json").read_text()) for name in ("int8", "fp32")}
    assert {r["image_id"] for r in rows["int8"]} == {r["image_id"] for r in rows["fp32"]} == {1, 2}


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
    ({"int8_activations": "uint8"}, r"--int8-activations uint8 writes an int8 file's activations: add --int8"),
    ({"calib_method": "percentile"}, r"--calib-method percentile calibrates post-training int8: add --int8"),
    ({"calib_method": "entropy", "int8": True, "data": "x.yaml"}, r"--calib-method must be one of \('minmax', 'percentile'\)"),
    ({"int8_activations": "int4"}, r"--int8-activations must be one of \('int8', 'uint8'\), got 'int4'"),
    ({"int8_activations": "uint8", "int8": True, "data": "x.yaml", "include": ("onnx", "openvino")},
     r"--int8-activations uint8 is for onnxruntime on x86; --include openvino reads the int8 file"),
])
def test_option_errors(ckpts, tmp_path, kwargs, message):
    path, _ = ckpts["yoloxn"]
    with pytest.raises(ValueError, match=message):
        export.run(weights=path, **{"img_size": IMGSZ, "output": tmp_path / "m.onnx", **kwargs})


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
    monkeypatch.setattr(export_options, "require_cuda_for_half", lambda device: None)
    model = Model("models/yoloxn.yaml", nc=NC)  # fresh BatchNorm: well-conditioned in float16 (varied() is not)
    path = save_checkpoint(tmp_path / "fresh.pt", {"model": model.state_dict(), "yaml": model.yaml})
    res = export.run(weights=path, img_size=IMGSZ, half=True, deploy=True, simplify=True, output=tmp_path / "h.onnx")
    assert res["verification"][0].ok and "float16" in res["verification"][0].what
    assert res["report"].inputs[0][2] == "float16" and res["report"].outputs[0][2] == "float16"
    assert "float16" in read_metadata(onnx.load(str(res["onnx"])))["input"]
