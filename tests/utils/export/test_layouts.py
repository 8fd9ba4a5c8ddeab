"""utils/export/layouts.py: every layout written through the head contract and read back to the eval output."""
import json

import pytest
import torch

from models.heads.yolox import YOLOXDecoder
from tests.support import EXPORT_NC as NC, image_batch as images
from utils.export.layouts import ExportModel
from utils.infer.outputs import OutputFormat, decode_outputs
from utils.export.rewrite import prepare_for_export

YOLOX = YOLOXDecoder()


def test_decode_outputs_reproduces_eval_output(ckpts):
    _, model = ckpts["yoloxn"]
    x = images(2)
    with torch.no_grad():
        want = model(x)
        per_level = ExportModel(prepare_for_export(model), "per-level")(x)
        split = ExportModel(prepare_for_export(model), "split")(x)
    assert [tuple(t.shape) for t in per_level[:3]] == [(2, 4, 20, 20), (2, 1, 20, 20), (2, NC, 20, 20)]
    torch.testing.assert_close(decode_outputs([t.numpy() for t in per_level], "per-level", [8, 16, 32], YOLOX), want)
    boxes, scores = split
    torch.testing.assert_close(decode_outputs(split, "split", [8, 16, 32], YOLOX),
                               torch.cat((want[..., :4], torch.ones_like(boxes[..., :1]), want[..., 5:] * want[..., 4:5]), -1))
    with pytest.raises(ValueError, match=r"layout 'per-level' has 9 outputs \(reg_s8, obj_s8, cls_s8, .*got 2"):
        decode_outputs(split, "per-level", [8, 16, 32], YOLOX)
    with pytest.raises(ValueError, match="final detections"):
        decode_outputs([None] * 4, "nms", [8, 16, 32], YOLOX)
    with pytest.raises(ValueError, match=r"output layout must be one of .*got 'boxes'"):
        decode_outputs(split, "boxes", [8, 16, 32], YOLOX)


def test_per_level_outputs_of_the_wrong_shape_are_named(ckpts):
    _, model = ckpts["yoloxn"]
    with torch.no_grad():
        per_level = [t.numpy() for t in ExportModel(prepare_for_export(model), "per-level")(images())]
    per_level[4] = per_level[4][:, :, :5]  # obj_s16 cropped
    with pytest.raises(ValueError, match=r"per-level outputs must be reg \[B, 4, H, W\], obj \[B, 1, H, W\], "
                                         r"cls \[B, nc, H, W\]; got .* at level 1"):
        decode_outputs(per_level, "per-level", [8, 16, 32], YOLOX)


def test_output_format_round_trips_through_metadata(ckpts):
    _, model = ckpts["yoloxn"]
    fmt = ExportModel(prepare_for_export(model), "per-level").format
    assert fmt == OutputFormat("per-level", (8.0, 16.0, 32.0), fmt.decoder)
    assert fmt.names == [f"{m}_s{s}" for s in (8, 16, 32) for m in ("reg", "obj", "cls")]
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in fmt.metadata().items()}  # as ONNX stores it
    back = OutputFormat.from_meta(meta)
    assert (back.layout, back.strides, back.names) == (fmt.layout, fmt.strides, fmt.names)
    assert isinstance(back.decoder, YOLOXDecoder) and fmt.with_layout("split").names == ["boxes", "scores"]
    assert "box = ((x, y) + cell) * s" in meta["output_layout"]


def test_export_model_takes_only_the_layouts_its_head_declares(ckpts):
    _, model = ckpts["yoloxn"]
    prepared = prepare_for_export(model)
    prepared.detect.export_layouts = ("per-level",)  # a head without a decoded layout
    with pytest.raises(ValueError, match=r"DetectX exports the layouts \('per-level',\), not 'decoded'"):
        ExportModel(prepared, "decoded")
    with pytest.raises(ValueError, match="no detection head"):
        ExportModel(torch.nn.Conv2d(3, 3, 1), "per-level")
