"""utils/export/onnx_file.py: ops an opset cannot express are named with the opset they need."""
import pytest
import torch
from torch import nn

from utils.export.onnx_file import OpsetError, export_onnx


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
