"""utils/export/options.py: every refused combination is named before any work, and a missing toolchain
package says what to install."""
import sys

import pytest
import torch

import export
from tests.support import EXPORT_SIZE as IMGSZ
from utils.export import options
from utils.export.options import DatasetImages, ExportOptions, NmsOptions

pytest.importorskip("onnxruntime")


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


def test_half_with_converted_format_is_refused(monkeypatch):
    """--half needs CUDA (refused on the CPU); on a CUDA device the converted formats still refuse it."""
    monkeypatch.setattr(options, "require_cuda_for_half", lambda device: None)
    with pytest.raises(ValueError, match=r"--include openvino converts the float32 ONNX .*drop --half"):
        ExportOptions(weights="w.pt", include=("onnx", "openvino"), half=True, device="0")


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


def test_options_normalise_and_know_their_layout():
    opts = ExportOptions(weights="w.pt", img_size=320, include="onnx", dynamic=None)
    assert (opts.img_size, opts.include, opts.dynamic, opts.layout) == ((320, 320), ("onnx",), (), "decoded")
    assert ExportOptions(weights="w.pt", deploy=True).layout == "per-level"
    assert ExportOptions(weights="w.pt", nms=NmsOptions(max_det=10)).layout == "nms"
    flat = ExportOptions.from_flat(weights="w.pt", nms=True, max_det=5, data="d.yaml", calib_images=7)
    assert flat.nms == NmsOptions(5, 0.45, 0.25) and flat.images == DatasetImages("d.yaml", 7, "train")
    assert ExportOptions.from_flat(weights="w.pt", deploy=True, int8=True, data="d.yaml").int8
    with pytest.raises(ValueError, match="pass --weights .* or --cfg"):
        ExportOptions()
    with pytest.raises(ValueError, match="max_det must be >= 1, got 0"):
        NmsOptions(max_det=0)
    with pytest.raises(ValueError, match="--calib-images must be >= 1, got 0"):
        DatasetImages("d.yaml", calibration=0)
    with pytest.raises(TypeError, match=r"unknown export option\(s\) \['imgsz'\]"):
        ExportOptions.from_flat(weights="w.pt", imgsz=320)
    assert torch.cuda.is_available() or ExportOptions(weights="w.pt").device == "cpu"
