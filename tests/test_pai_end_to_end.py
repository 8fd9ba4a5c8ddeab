"""The YOLOX-PAI model files through the whole pipeline on a tiny demo set: train.py, val.py and
export.py --deploy --simplify (onnxruntime parity, NPU report), and learning on fixed images."""
import math

import pytest
import torch

import export
import val
from models.weights import load_model
from models.yolo import Model
from tests.support import ROOT, losses_on_fixed_batch, run_train, train_args

PAI_FILES = ["pai_yoloxs", "pai_yoloxs_asff", "pai_yoloxs_asff_sim", "pai_yoloxs_asff_tood3", "pai_yoloxs_gsconv"]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("name", PAI_FILES)
def test_trains_evaluates_and_exports_deployed(tiny_data, tmp_path, name):
    pytest.importorskip("onnxruntime")
    args = train_args(tiny_data, tmp_path, name, epochs=1)
    args[args.index("--cfg") + 1] = f"models/{name}.yaml"
    r = run_train(args, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    weights = tmp_path / name / "weights" / "last.pt"
    results, _, _ = val.main(["--data", str(tiny_data), "--weights", str(weights), "--img-size", "64",
                              "--batch-size", "4", "--workers", "0", "--project", str(tmp_path / "val")])
    assert all(math.isfinite(x) for x in results)
    res = export.main(["--weights", str(weights), "--include", "onnx", "--simplify", "--deploy", "--img-size", "64"])
    assert [c.ok for c in res["verification"]] == [True]  # onnxruntime against torch (export raises otherwise)
    report = res["report"]
    assert report.conv_relu >= 21  # the 19 folded RepVGG blocks and MT_SPPF's two convs: plain Conv + Relu
    assert report.op_counts["BatchNormalization"] == 0 and report.outside.keys() <= {"Split", "Slice",
                                                                                     "InstanceNormalization"}
    model = load_model(weights)
    assert model.yaml["yaml_file"] == f"{name}.yaml"


@pytest.mark.parametrize("name", ["pai_yoloxs_asff", "pai_yoloxs_asff_tood3", "pai_yoloxs_gsconv"])
def test_loss_falls_on_fixed_images(tiny_data, name):
    """30 steps on 8 fixed images: the loss falls by a quarter at least (every new block gets gradients)."""
    torch.manual_seed(0)
    model = Model(f"models/{name}.yaml", nc=8)
    losses = losses_on_fixed_batch(model, tiny_data, 30)
    assert all(math.isfinite(x) for x in losses) and sum(losses[-5:]) / 5 < 0.75 * sum(losses[:5]) / 5, losses
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, no_grad[:5]
