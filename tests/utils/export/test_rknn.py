"""utils/export/rknn.py: calibration files as the model's input, RKNN files refused where they cannot run,
and the int8 / float16 models in rknn-toolkit2's simulator (skipped without rknn-toolkit2, which CI lacks)."""
import numpy as np
import pytest
import torch

import export
from tests.support import EXPORT_SIZE as IMGSZ

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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


def test_rknn_step_of_the_exporter_without_the_toolkit(tiny, tmp_path, monkeypatch, caplog):
    """The exporter's RKNN step (paths, calibration images, the comparison with torch, release) with
    rknn-toolkit2 stood in for by onnxruntime on the ONNX file it would convert: every figure at its ideal."""
    from utils.export import rknn
    from utils.export.verify import ort_session, run_onnx

    built = {}

    class FakeRknn:
        runtime = "onnxruntime standing in for the rknn simulator"

        def __init__(self, onnx_path, path, platform, images, meta, qat=False):
            built.update(onnx=onnx_path, path=path, platform=platform, n_calib=None if images is None else len(images),
                         meta=meta, qat=qat)
            self.session = ort_session(onnx_path)

        def run(self, batch):
            return run_onnx(self.session, torch.from_numpy(batch))

        def release(self):
            built["released"] = True

    monkeypatch.setattr(rknn, "require_rknn", lambda: None)
    monkeypatch.setattr(rknn, "build_rknn", FakeRknn)
    path, _, data = tiny
    res = export.run(weights=path, include=("rknn",), img_size=IMGSZ, deploy=True, int8=True, data=data,
                     calib_images=3, rknn_platform="rk3566", output=tmp_path / "m.onnx")
    assert res["rknn"] == tmp_path / "m.int8.rknn" and built["onnx"] == tmp_path / "m.onnx" and built["released"]
    assert built["platform"] == "rk3566" and built["n_calib"] == 3 and built["meta"]["layout"] == "per-level"
    assert built["qat"] is False  # a float model: calibrated, not imported as a QAT model
    c = res["rknn_comparison"]
    assert c.runtime == FakeRknn.runtime and c.n_images == 2 and c.source == "val images"
    assert c.cosine > 0.99999 and c.agreement.share == 1.0
    assert "decoding in the graph" not in caplog.text
    export.run(weights=path, include=("rknn",), img_size=IMGSZ, deploy=True, deploy_outputs="split", int8=True,
               data=data, calib_images=3, output=tmp_path / "s.onnx")
    assert "RKNN int8 of the 'split' layout" in caplog.text and "--deploy-outputs per-level" in caplog.text


@pytest.mark.parametrize("name", ["pai_yoloxs_asff_tood3", "pai_yoloxs_asff_sim", "pai_yoloxs_gsconv", "damoyolo_t",
                                  "damoyolo_m"])
def test_yolox_pai_and_damo_files_convert(tmp_path, name):
    """GroupNorm, ASFF's Splits, ASFF_sim's strided Slices, GSConv's shuffle and ZeroHead's per-level GFL outputs
    through rknn-toolkit2's builder and simulator (float16, random weights)."""
    pytest.importorskip("rknn.api", reason="rknn-toolkit2 not installed (pip install rknn-toolkit2, own venv)")
    res = export.run(cfg=f"models/{name}.yaml", include=("rknn",), img_size=IMGSZ, deploy=True,
                     output=tmp_path / f"{name}.onnx")
    assert res["rknn"].name == f"{name}.rknn" and res["rknn_comparison"].cosine > 0.995
