"""utils/export/rewrite.py: Focus as convolutions (s2d bit-identical, fold to float rounding), BN folded."""
import numpy as np
import onnx
import pytest
import torch

import export
from models.common import Focus
from tests.support import EXPORT_SIZE as IMGSZ, image_batch as images, ort_decoded
from utils.export.rewrite import FocusConv, prepare_for_export

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
    x = images()
    with torch.no_grad():
        want = model(x)
    got = ort_decoded(res["onnx"], x)
    assert (got[..., :4] - want[..., :4]).abs().max() <= 1e-3 * want[..., :4].abs().max()
    np.testing.assert_allclose(got[..., 4:], want[..., 4:], atol=1e-3)
    prepared = prepare_for_export(model, fuse=True, focus_conv=mode)
    assert isinstance(prepared.model[0], FocusConv) and prepared.model[0].i == 0 and isinstance(model.model[0], Focus)
