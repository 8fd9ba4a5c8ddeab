"""DAMO-YOLO model files through export and evaluation: export.py --deploy writes per-level raw box
distributions and sigmoid class scores (the GFL decoding stays outside the graph), and val.py evaluates
the ONNX file through the decoder its metadata names, as the model itself."""
import math

import pytest
import torch

import export
import val
from models.yolo import Model
from tests.support import losses_on_fixed_batch
from utils.checkpoints import save_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def damo_t(tmp_path_factory):
    """A checkpoint of a random damoyolo_t with 8 classes (the tiny demo set's)."""
    torch.manual_seed(0)
    model = Model("models/damoyolo_t.yaml", nc=8)
    path = tmp_path_factory.mktemp("damo") / "damo_t.pt"
    save_checkpoint(path, {"model": model.state_dict(), "yaml": model.yaml, "names": [str(i) for i in range(8)]})
    return path


def test_deployed_export_keeps_the_decoding_outside_and_evaluates_like_the_model(damo_t, tiny_data, tmp_path):
    pytest.importorskip("onnxruntime")
    res = export.main(["--weights", str(damo_t), "--include", "onnx", "--simplify", "--deploy", "--img-size", "64",
                       "--output", str(tmp_path / "t.onnx")])
    assert [c.ok for c in res["verification"]] == [True] and res["layout"] == "per-level"
    outputs = {name: shape for name, shape, _ in res["report"].outputs}
    assert outputs == {"reg_s8": [1, 68, 8, 8], "cls_s8": [1, 8, 8, 8], "reg_s16": [1, 68, 4, 4],
                       "cls_s16": [1, 8, 4, 4], "reg_s32": [1, 68, 2, 2], "cls_s32": [1, 8, 2, 2]}
    assert "Softmax" not in res["report"].op_counts and res["report"].op_counts["BatchNormalization"] == 0
    args = ["--data", str(tiny_data), "--img-size", "64", "--batch-size", "4", "--workers", "0", "--conf-thres", "0.001"]
    from_onnx, _, _ = val.main([*args, "--weights", str(res["onnx"]), "--project", str(tmp_path / "a")])
    from_torch, _, _ = val.main([*args, "--weights", str(damo_t), "--project", str(tmp_path / "b")])
    assert all(math.isfinite(x) for x in from_onnx)
    assert from_onnx[:4] == pytest.approx(from_torch[:4], abs=0.02)  # P, R, mAP50, mAP50-95 of the same network


def test_decoded_layout_puts_the_softmax_expectation_in_the_graph(damo_t, tmp_path):
    pytest.importorskip("onnxruntime")
    res = export.main(["--weights", str(damo_t), "--include", "onnx", "--img-size", "64",
                       "--output", str(tmp_path / "d.onnx")])
    assert res["layout"] == "decoded" and [c.ok for c in res["verification"]] == [True]
    assert res["report"].op_counts["Softmax"] >= 1


def test_yolox_with_a_repgfpn_neck_trains_and_exports(tiny_data, tmp_path):
    """The families mix by rows: YOLOX-s's backbone and head around DAMO's RepGFPN train with YOLOX's loss."""
    from tests.support import ROOT, run_train, train_args

    pytest.importorskip("onnxruntime")
    args = train_args(tiny_data, tmp_path, "mix", epochs=1)
    args[args.index("--cfg") + 1] = "models/yoloxs_repgfpn.yaml"
    r = run_train(args, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = export.main(["--weights", str(tmp_path / "mix" / "weights" / "last.pt"), "--include", "onnx", "--simplify",
                       "--deploy", "--img-size", "64"])
    assert [c.ok for c in res["verification"]] == [True]
    assert res["report"].op_counts["BatchNormalization"] == 0 and res["report"].outside.keys() <= {"Slice"}  # Focus


def test_damoyolo_t_trains_with_the_gfl_loss(tiny_data, tmp_path):
    """train.py runs DAMO's loss (ComputeGFLLoss, AlignOTA) for a ZeroHead model; the checkpoint loads."""
    from models.weights import load_model
    from tests.support import ROOT, run_train, train_args

    args = train_args(tiny_data, tmp_path, "damo", epochs=1)
    args[args.index("--cfg") + 1] = "models/damoyolo_t.yaml"
    r = run_train(args, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "qfl_loss" in (tmp_path / "damo" / "results.csv").read_text().splitlines()[0]
    model = load_model(tmp_path / "damo" / "weights" / "last.pt")
    assert model.yaml["yaml_file"] == "damoyolo_t.yaml" and model.nc == 8


def test_loss_falls_on_fixed_images(tiny_data):
    """60 steps on 8 fixed images: DAMO-YOLO-T's loss falls by a quarter at least (slowly at first: the QFL
    and the score-weighted box terms start from the 0.01 class prior)."""
    torch.manual_seed(0)
    model = Model("models/damoyolo_t.yaml", nc=8)
    losses = losses_on_fixed_batch(model, tiny_data, 60)
    assert all(math.isfinite(x) for x in losses) and sum(losses[-5:]) / 5 < 0.75 * sum(losses[:5]) / 5, losses
