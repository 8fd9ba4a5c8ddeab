"""export.py: the seed's command line, its report, and its one-line error messages."""
import logging

import pytest

import export
from tests.support import EXPORT_SIZE as IMGSZ

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


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


def test_cli_messages(tmp_path):
    with pytest.raises(SystemExit, match=r"export.py: weights not found: .*missing.pt"):
        export.main(["--weights", str(tmp_path / "missing.pt")])
    opt = export.parse_opt(["--weights", "w.pt", "--dynamic", "--img-size", "480", "640", "--focus-conv"])
    assert opt.dynamic == ["batch"] and opt.img_size == [480, 640] and opt.focus_conv == "s2d"
