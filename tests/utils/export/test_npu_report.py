"""utils/export/npu_report.py on a model whose ops are known."""
import torch
from torch import nn

from utils.export.npu_report import npu_report
from utils.export.onnx_file import export_onnx


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


class Normed(nn.Module):
    """The model file's ``input`` step (BGR -> RGB, mean, std), then a Conv-Relu."""

    def __init__(self):
        super().__init__()
        from models.input_norm import InputNorm

        self.input_norm = InputNorm("rgb", (1.0, 2.0, 3.0), (4.0, 5.0, 6.0))  # the attribute name Model uses
        self.c1 = nn.Conv2d(3, 4, 3, 1, 1)

    def forward(self, x):
        return torch.relu(self.c1(self.input_norm(x)))


def test_input_normalisation_has_its_own_line_not_focus_or_the_decoding_tail(tmp_path):
    f = export_onnx(Normed().eval(), torch.rand(1, 3, 16, 16), tmp_path / "n.onnx", opset=12, output_names=["out"])
    r = npu_report(f)
    assert dict(r.input_norm) == {"Slice": 1, "Sub": 1, "Div": 1} and r.input_slices == 0
    assert r.outside == {} and r.conv_relu == 1
    text = r.text()
    assert "input normalisation in the graph (the model file's input: order, mean, std): Div 1, Slice 1, Sub 1" in text
    assert "Focus" not in text and "outside the conservative 8-bit NPU op set: none" in text


class PaiBlocks(nn.Module):
    """ASFF in both modes and a GroupNorm conv (the TOOD head's), then a slice of an output (a tail Slice)."""

    def __init__(self):
        super().__init__()
        from models.asff import ASFF
        from models.heads.tood import ConvGN

        self.asff, self.sim = ASFF([8, 16, 32], 2, "asff"), ASFF([8, 16, 32], 0, "sim")
        self.gn = ConvGN(32, 32, 3, groups=4)

    def forward(self, p3):  # [1, 8, 16, 16]
        p4 = nn.functional.max_pool2d(torch.cat((p3, p3), 1), 2)
        p5 = nn.functional.max_pool2d(torch.cat((p4, p4), 1), 2)
        return self.gn(self.asff([p3, p4, p5])), self.sim([p3, p4, p5])[:, :2]


def test_splits_and_slices_inside_the_network_are_told_from_the_tail(tmp_path):
    f = export_onnx(PaiBlocks().eval(), torch.rand(1, 8, 16, 16), tmp_path / "p.onnx", opset=12,
                    output_names=["a", "b"])
    r = npu_report(f)
    # ASFF: one Split of the level weights each; sim to P3: P5 upsampled then two channel-pair means, P4 one
    assert r.body == {"Split": 2, "Slice": 6} and r.op_counts["Slice"] == 7 and r.input_slices == 0
    text = r.text()
    assert "Split x2: 2 in the network (channel splits" in text
    assert "Slice x7: 6 in the network (strided slices: ASFF_sim's" in text and "; 1 in the decoding" in text
    assert "InstanceNormalization x1: GroupNorm (the TOOD head's" in text
