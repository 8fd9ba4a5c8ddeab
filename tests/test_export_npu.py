"""--include openvino / rknn (utils/export/openvino.py, utils/export/rknn.py) and the comparison with torch
(utils/export/compare.py), on a small yoloxn at 160 px.

The toolchain tests skip when openvino / nncf / rknn-toolkit2 are not installed (CI does not install them);
the comparison machinery, the missing-package messages, the option checks and rknn's calibration files are
tested without them.
"""
import sys
from collections import Counter

import numpy as np
import pytest
import torch
import yaml

import export
from tests.test_export import IMGSZ, image_batch, varied
from utils.checkpoints import save_checkpoint
from utils.data.demo import DEMO_NAMES, generate_demo_dataset
from utils.export.compare import compare_with_torch, detection_agreement
from utils.export.layouts import ExportModel, decode_outputs, output_names
from utils.export.rewrite import prepare_for_export

pytest.importorskip("onnxruntime")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(checkpoint path, model, dataset yaml) of a varied yoloxn and a 6-image demo dataset at 160 px."""
    root = tmp_path_factory.mktemp("npu")
    model = varied("models/yoloxn.yaml")
    with torch.no_grad():  # box regression of a trained model's size (varied()'s reaches exp(12) px): the int8
        for conv in model.detect.reg_preds:  # figures then mean something
            conv.weight.mul_(0.1)
            conv.bias.mul_(0.1)
    path = save_checkpoint(root / "n.pt", {"model": model.state_dict(), "yaml": model.yaml, "names": ["a", "b", "c"]})
    demo = generate_demo_dataset(root / "demo", seed=0, n_train=4, n_val=2, img_size=(IMGSZ, IMGSZ), progress=False)
    data = root / "demo.yaml"
    data.write_text(yaml.safe_dump({"path": str(demo), "train": "images/train", "val": "images/val",
                                    "names": list(DEMO_NAMES)}))
    return path, model, str(data)


# ---- detection agreement: hand-made detections ---------------------------------------------------------------
def dets(*rows):
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 6)  # x1, y1, x2, y2, score, class


def test_agreement_matches_same_class_by_iou_one_to_one():
    ref = [dets([0, 0, 10, 10, 0.9, 0], [20, 20, 30, 30, 0.8, 1], [0, 0, 10, 10, 0.7, 0], [50, 50, 60, 60, 0.6, 2])]
    got = [dets([1, 0, 11, 10, 0.9, 0],  # IoU 9/11 with the first
                [20, 20, 30, 30, 0.8, 2],  # right box, wrong class
                [50, 54, 60, 64, 0.5, 2])]  # IoU 6/14 < 0.5
    a = detection_agreement(ref, got)
    # the first ref takes the only class-0 box; the third (same box, class 0) finds it taken
    assert (a.n_ref, a.n_got, a.matched) == (4, 3, 1) and a.share == 0.25
    assert a.mean_iou == pytest.approx(9 / 11)
    assert "25.0% of torch's 4 found again (same class, IoU >= 0.5; mean IoU 0.818); the converted model gave 3" \
        in a.line()


def test_agreement_top_k_and_empty():
    ref = [dets(*[[i, 0, i + 5, 5, 1 - i / 100, 0] for i in range(0, 60, 6)]), dets()]
    got = [ref[0].flip(0)[:8], dets()]  # ref's ten boxes but its best two, in reverse order
    a = detection_agreement(ref, got, top_k=4)  # ref's best 4 are looked for among all of got's
    assert (a.n_ref, a.n_got, a.matched) == (4, 8, 2)
    assert detection_agreement([dets()], [dets()]).share == 1.0  # nothing to find, nothing found
    assert detection_agreement([dets()], [dets([0, 0, 1, 1, 0.5, 0])]).share == 0.0


# ---- compare_with_torch on torch itself: every figure at its ideal ---------------------------------------------
@pytest.mark.parametrize("layout", ["per-level", "split"])
def test_compare_with_torch_on_itself(tiny, layout):
    _, model, _ = tiny
    wrapped = ExportModel(prepare_for_export(model), layout).eval()

    def run(batch):
        with torch.no_grad():
            return [t.numpy() for t in wrapped(torch.from_numpy(batch))]

    names = output_names(layout, [8, 16, 32])
    images = image_batch(3).numpy()
    c = compare_with_torch(run, wrapped, model, images, layout, [8, 16, 32], names, "self.xml", "torch")
    assert [n for n, *_ in c.lines] == names + ["decoded boxes (px)", "decoded scores"]
    assert c.cosine > 0.99999 and c.n_images == 3
    assert c.agreement.n_ref == 300 and c.agreement.share == 1.0 and c.agreement.mean_iou == pytest.approx(1.0)
    assert "self.xml (torch) vs fp32 torch, 3 images:" in c.text()


def test_compare_with_torch_sees_a_wrong_output(tiny):
    """A runtime that swaps two levels' class maps: cosine and detections drop, shapes are checked."""
    _, model, _ = tiny
    wrapped = ExportModel(prepare_for_export(model), "per-level").eval()

    def run(batch):
        with torch.no_grad():
            outs = [t.numpy() for t in wrapped(torch.from_numpy(batch))]
        outs[2] = outs[2][..., ::-1, :].copy()  # cls_s8 upside down
        return outs

    names = output_names("per-level", [8, 16, 32])
    c = compare_with_torch(run, wrapped, model, image_batch(2).numpy(), "per-level", [8, 16, 32], names, "x", "x")
    cos = {n: v for n, _, _, v in c.lines}
    assert cos["reg_s8"] > 0.99999 and cos["cls_s8"] < 0.999 and c.agreement.share < 1.0
    with pytest.raises(ValueError, match=r"cls_s8: the converted model gives shape \(2, 3, 20, 10\), torch gives "
                                         r"\(2, 3, 20, 20\)"):
        compare_with_torch(lambda b: [o[..., :10] if k == 2 else o for k, o in enumerate(run(b))], wrapped, model,
                           image_batch(2).numpy(), "per-level", [8, 16, 32], names, "x", "x")


# ---- options and missing packages --------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,message", [
    ({"include": ("rknn",), "dynamic": ("batch",)}, r"--include rknn needs a static input shape .*: drop --dynamic"),
    ({"include": ("rknn",), "batch_size": 2}, r"--include rknn converts batch 1 .*got --batch-size 2"),
    ({"include": ("rknn",), "nms": True}, r"Rockchip NPUs do not run NonMaxSuppression; export --deploy"),
    ({"include": ("rknn",), "rknn_platform": "rk9999"}, r"--rknn-platform must be one of rk3588, .*got 'rk9999'"),
    ({"include": ("torchscript",), "int8": True, "data": "x.yaml"},
     r"--int8 quantises the ONNX file, the OpenVINO IR or the RKNN model: add --include onnx, openvino or rknn"),
    ({"include": ("tflite",)}, r"--include 'tflite': choose from \('onnx', 'torchscript', 'openvino', 'rknn'\)"),
])
def test_npu_option_errors(tiny, tmp_path, kwargs, message):
    path, _, _ = tiny
    with pytest.raises(ValueError, match=message):
        export.run(weights=path, **{"img_size": IMGSZ, "output": tmp_path / "m.onnx", **kwargs})
    assert not (tmp_path / "m.onnx").exists()  # refused before any work


def test_half_with_converted_format_is_refused():
    """--half needs CUDA (refused above on the CPU); on a CUDA device the converted formats still refuse it."""
    with pytest.raises(ValueError, match=r"--include openvino converts the float32 ONNX .*drop --half"):
        export._check_options(("openvino",), (IMGSZ, IMGSZ), 32, 1, True, None, False, True, torch.device("cuda"),
                              False, None, ())


@pytest.mark.parametrize("include,int8,blocked,message", [
    ("openvino", False, ["openvino"], r"--include openvino needs openvino \(.*\): install it with pip install "
                                      r"openvino nncf \(or pip install -e \"\.\[openvino\]\"\)"),
    ("openvino", True, ["nncf"], r"--include openvino --int8 needs .*nncf \(.*\): install it with pip install "
                                 r"openvino nncf"),
    ("rknn", False, ["rknn", "rknn.api"], r"--include rknn needs rknn-toolkit2 \(.*\): install it with pip install "
                                          r"rknn-toolkit2 \(or pip install -e \"\.\[rknn\]\"\), in a separate virtual "
                                          r"environment"),
])
def test_missing_package_says_what_to_install(monkeypatch, tiny, tmp_path, include, int8, blocked, message):
    path, _, data = tiny
    for name in blocked:  # None in sys.modules: importing it raises ImportError, installed or not
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=message):
        export.run(weights=path, include=(include,), img_size=IMGSZ, int8=int8, data=data, output=tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()  # said before exporting anything
    argv = ["--weights", str(path), "--include", include, "--img-size", str(IMGSZ), "--output", str(tmp_path / "m.onnx")]
    with pytest.raises(SystemExit, match=r"export.py: --include " + include):
        export.main(argv + (["--int8", "--data", data] if int8 else []))


def test_rknn_file_given_to_val_says_where_it_runs(tmp_path):
    from utils.infer.backends import load_weights

    (tmp_path / "m.rknn").write_bytes(b"RKNN")
    with pytest.raises(ValueError, match="run on the Rockchip NPU"):
        load_weights(tmp_path / "m.rknn")


def test_rknn_calibration_files_are_the_model_input(tmp_path):
    """rknn reads .npy calibration data as it is: NCHW BGR 0-255 float, one image per file, listed in order."""
    from utils.export.rknn import _write_dataset

    images = (np.random.default_rng(0).random((3, 3, 32, 64)) * 255).astype(np.float32)
    listing = _write_dataset(images, tmp_path)
    files = listing.read_text().splitlines()
    assert len(files) == 3 and all(f.endswith(".npy") and f.startswith("/") for f in files)
    for f, im in zip(files, images):
        a = np.load(f)
        assert a.shape == (1, 3, 32, 64) and a.dtype == np.float32 and np.array_equal(a[0], im)


# ---- the toolchains themselves (skipped when not installed) ------------------------------------------------------
def test_openvino_export_and_int8(tiny, tmp_path):
    pytest.importorskip("openvino", reason="openvino not installed (pip install openvino nncf)")
    pytest.importorskip("nncf", reason="nncf not installed (pip install openvino nncf)")
    from utils.export.openvino import openvino_runner, read_openvino_metadata

    path, model, data = tiny
    res = export.run(weights=path, include=("openvino",), img_size=IMGSZ, deploy=True, int8=True, data=data,
                     calib_images=3, output=tmp_path / "m.onnx")
    xml, int8_xml = res["openvino"], res["openvino_int8"]
    assert (xml.name, int8_xml.name) == ("m.xml", "m.int8.xml") and xml.with_suffix(".bin").exists()
    assert res["onnx"].exists() and "int8" not in res  # the ONNX it converts; the QDQ ONNX only with onnx included
    meta = read_openvino_metadata(xml)
    assert meta["layout"] == "per-level" and yaml.safe_load(meta["stride"]) == [8, 16, 32]
    assert read_openvino_metadata(int8_xml)["quantization"].startswith("int8 (NNCF")
    # the float32 IR is the model: outputs, decoded boxes and scores, detections
    fp32 = res["openvino_fp32_comparison"]
    assert fp32.cosine > 0.99999 and fp32.agreement.share > 0.97 and fp32.source == "val images"
    x = image_batch()
    with torch.no_grad():
        want = model(x)
    run = openvino_runner(xml, output_names("per-level", [8, 16, 32]))
    got = decode_outputs(run(x.numpy()), "per-level", [8, 16, 32])
    assert (got[..., :4] - want[..., :4]).abs().max() <= 1e-3 * want[..., :4].abs().max()
    np.testing.assert_allclose(got[..., 4:], want[..., 4:], atol=1e-3)
    # val.py / detect.py / Detector load the IR like an ONNX file (utils.infer.backends.load_weights)
    from utils.infer.backends import OpenVinoModel, load_weights

    ir, official = load_weights(xml, imgsz=IMGSZ)
    assert isinstance(ir, OpenVinoModel) and not official and ir.names == list(model.names)
    loaded = ir(x)
    assert loaded.shape == want.shape
    np.testing.assert_allclose(loaded[..., 4:], want[..., 4:], atol=1e-3)
    with pytest.raises(ValueError, match="--img-size"):
        load_weights(xml, imgsz=IMGSZ + 32)
    # the int8 IR: quantised convs, measured on the 2 val images (a random model calibrated on 3 images: the
    # figures are loose; utils.export.compare's own tests pin the arithmetic)
    import openvino as ov

    ops = Counter(op.get_type_name() for op in ov.Core().read_model(str(int8_xml)).get_ops())
    assert ops["FakeQuantize"] >= ops["Convolution"] > 50
    q = res["openvino_comparison"]
    assert q.path == int8_xml and q.n_images == 2 and q.agreement.n_ref == 200 and q.agreement.matched > 0
    cos = {n: c for n, _, _, c in q.lines}
    assert set(cos) >= {"reg_s8", "cls_s32", "decoded boxes (px)", "decoded scores"}
    assert cos["decoded boxes (px)"] > 0.99 and cos["decoded scores"] > 0.8


@pytest.mark.parametrize("kwargs,first,min_cosine", [
    ({"deploy": True, "deploy_outputs": "split", "dynamic": ("batch",)}, ["boxes", "scores"], 0.9999),
    # NMS rows: near-equal scores may swap places, which moves rows of the padded outputs
    ({"nms": True, "opset": 11, "conf_thres": 0.05}, ["num_dets", "boxes", "scores", "classes"], 0.99),
], ids=["split-dynamic", "nms"])
def test_openvino_float32_layouts_without_data(tiny, tmp_path, kwargs, first, min_cosine):
    pytest.importorskip("openvino", reason="openvino not installed (pip install openvino nncf)")
    path, _, _ = tiny
    res = export.run(weights=path, include=("openvino",), img_size=IMGSZ, output=tmp_path / "s.onnx", **kwargs)
    c = res["openvino_comparison"]
    assert "openvino_int8" not in res and c.source.startswith("random inputs") and c.agreement.n_ref > 0
    assert [n for n, *_ in c.lines][:len(first)] == first and c.cosine > min_cosine and c.agreement.share > 0.97


def test_rknn_export_int8_and_float16(tiny, tmp_path):
    pytest.importorskip("rknn.api", reason="rknn-toolkit2 not installed (pip install rknn-toolkit2, own venv)")
    path, _, data = tiny
    res = export.run(weights=path, include=("rknn",), img_size=IMGSZ, deploy=True, int8=True, data=data,
                     calib_images=3, rknn_platform="rk3566", output=tmp_path / "m.onnx")
    c = res["rknn_comparison"]
    assert res["rknn"].name == "m.int8.rknn" and res["rknn"].stat().st_size > 100_000
    assert c.runtime == "rknn-toolkit2 simulator, rk3566, int8" and c.n_images == 2 and c.agreement.n_ref == 200
    cos = {n: v for n, _, _, v in c.lines}  # int8 of a random model on 3 images: loose figures
    assert cos["decoded boxes (px)"] > 0.99 and cos["decoded scores"] > 0.8 and c.agreement.matched > 0
    res = export.run(weights=path, include=("rknn",), img_size=IMGSZ, deploy=True, opset=13, data=data,
                     output=tmp_path / "f.onnx")
    c = res["rknn_comparison"]
    assert res["rknn"].name == "f.rknn" and c.runtime.endswith("float16")
    assert c.cosine > 0.995 and c.agreement.share > 0.9  # float16 (the simulator's float type): close to torch
