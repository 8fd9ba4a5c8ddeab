"""The head contract (models/heads/base.py) and YOLOX's head on it (models/heads/yolox.py): outputs and
decoding against hand-computed values, one decoder for the eval output, raw outputs, export maps and files."""
import json
import math

import pytest
import torch

from models.heads import DECODERS, BoxDecoder, DetectionHead, DetectX, decoder_from_meta, decoder_metadata
from models.heads.base import boxes_and_scores, decode_levels, flatten_levels
from models.heads.yolox import YOLOXDecoder
from models.yolo import Model
from tests.reference import randomize_bn
from utils.grid import make_grid


def test_detectx_bias_prior():
    head = DetectX(nc=4, ch=[8, 8])
    expected = -math.log((1 - 0.01) / 0.01)
    assert torch.allclose(head.cls_preds[0].bias, torch.full((4,), expected))
    assert torch.allclose(head.obj_preds[0].bias, torch.full((1,), expected))
    assert expected == pytest.approx(-4.59512, abs=1e-5)


TWO_LEVELS = {
    "nc": 2,
    "backbone": [[-1, 1, "Conv", [8, 3, 2]], [-1, 1, "Conv", [8, 3, 2]], [-1, 1, "Conv", [8, 3, 2]]],
    "head": [[1, 1, "Conv", [8, 1, 1]], [1, 1, "Conv", [8, 1, 1]],
             [2, 1, "Conv", [8, 1, 1]], [2, 1, "Conv", [8, 1, 1]],
             [[3, 4, 5, 6], 1, "DetectX", ["nc", 1]]],
}


def constant_head_model():
    """Prediction convs with zero weights and known biases, so outputs are hand-computable."""
    model = Model(TWO_LEVELS)
    head = model.detect
    with torch.no_grad():
        for convs in (head.cls_preds, head.reg_preds, head.obj_preds):
            for c in convs:
                c.weight.zero_()
        for k in range(2):
            head.reg_preds[k].bias.copy_(torch.tensor([0.5, 0.25, math.log(2.0), 0.0]))
            head.obj_preds[k].bias.fill_(0.0)
            head.cls_preds[k].bias.copy_(torch.tensor([1.0, -1.0]))
    return model


def test_detectx_train_output_layout():
    model = constant_head_model().train()
    out = model(torch.zeros(2, 3, 32, 64))
    assert model.stride.tolist() == [4.0, 8.0]
    assert [tuple(o.shape) for o in out] == [(2, 7, 8, 16), (2, 7, 4, 8)]
    # channels (x, y, w, h, obj, cls0, cls1), raw logits
    assert torch.allclose(out[0][0, :, 3, 5], torch.tensor([0.5, 0.25, math.log(2.0), 0.0, 0.0, 1.0, -1.0]))


def test_detectx_eval_decoding_against_hand_grid():
    model = constant_head_model().eval()
    y = model(torch.zeros(1, 3, 32, 64))
    assert y.shape == (1, 8 * 16 + 4 * 8, 7)
    sig = torch.sigmoid
    # level 0, stride 4, cell (x=5, y=3): index 3 * 16 + 5; anchor at the top-left corner
    assert torch.allclose(y[0, 3 * 16 + 5], torch.tensor(
        [(5 + 0.5) * 4, (3 + 0.25) * 4, 2 * 4, 1 * 4, 0.5, sig(torch.tensor(1.0)), sig(torch.tensor(-1.0))]))
    # level 1, stride 8, cell (x=7, y=2): after the 128 level-0 anchors, row-major
    assert torch.allclose(y[0, 128 + 2 * 8 + 7, :4], torch.tensor([(7 + 0.5) * 8, (2 + 0.25) * 8, 16.0, 8.0]))


def test_detectx_rejects_bad_arguments():
    with pytest.raises(ValueError, match="pairs"):
        DetectX(2, 1, [8, 8, 8])
    with pytest.raises(ValueError, match="positive integer nc"):
        DetectX(0, 1, [8, 8])


def test_decoder_boxes_against_hand_values():
    """(x, y) offsets from the cell's top-left corner in cells, log (w, h) in strides."""
    reg = torch.tensor([[[0.5, 0.25, math.log(2.0), 0.0], [-1.0, 2.0, 0.0, math.log(3.0)]]])  # [1, 2, 4]
    grid = torch.tensor([[5.0, 3.0], [0.0, 7.0]])
    stride = torch.tensor([[4.0], [16.0]])
    boxes = YOLOXDecoder().boxes(reg, grid, stride)
    torch.testing.assert_close(boxes, torch.tensor([[[22.0, 13.0, 8.0, 4.0], [-16.0, 144.0, 16.0, 48.0]]]))


@pytest.mark.parametrize("cfg", ["yoloxn.yaml", "yoloxs_rslu.yaml"])
def test_one_decoder_serves_eval_output_raw_outputs_and_exported_maps(cfg):
    """The eval output, the decoded raw training outputs and the decoded per-level export maps are one
    computation."""
    model = randomize_bn(Model(cfg, nc=5)).eval()
    head = model.detect
    x = torch.rand(2, 3, 96, 128) * 255
    with torch.no_grad():
        eval_out = model(x)
        feats = model.features(x)
        raw = head.raw(feats)
        maps = head.maps(feats)
    assert [tuple(r.shape) for r in raw] == [(2, 4 + 1 + 5, 96 // s, 128 // s) for s in (8, 16, 32)]
    assert [tuple(t.shape[1] for t in level) for level in maps] == [head.decoder.channels(5)] * 3
    # sigmoid of a channel slice of the raw output may round an ulp away from sigmoid of the conv output
    torch.testing.assert_close(head.decode_raw(raw), eval_out, rtol=1e-6, atol=1e-7)
    assert torch.equal(decode_levels(head.decoder, maps, head.stride.tolist()), eval_out)
    # the maps are the logits through the decoder's activation: sigmoid scores, raw regression
    assert torch.equal(maps[0][0], raw[0][:, :4]) and torch.equal(maps[0][2], raw[0][:, 5:].sigmoid())


def test_flatten_levels_orders_anchors_level_major_row_major():
    level0 = (torch.arange(2 * 1 * 2 * 3.0).view(2, 1, 2, 3), torch.zeros(2, 2, 2, 3))
    level1 = (torch.full((2, 1, 1, 2), 9.0), torch.ones(2, 2, 1, 2))
    flat = flatten_levels([level0, level1])
    assert flat.shape == (2, 6 + 2, 3)
    assert flat[0, :6, 0].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0] and flat[1, 0, 0] == 6.0
    assert flat[0, 6:, 0].tolist() == [9.0, 9.0] and flat[0, 6:, 1:].eq(1).all()


def test_boxes_and_scores_multiply_objectness():
    decoded = torch.tensor([[[10.0, 20.0, 4.0, 6.0, 0.5, 0.2, 0.8]]])
    boxes, scores = boxes_and_scores(decoded)
    assert boxes.tolist() == [[[10.0, 20.0, 4.0, 6.0]]] and torch.allclose(scores, torch.tensor([[[0.1, 0.4]]]))


def test_decoder_from_metadata_round_trip_and_unknown_name():
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in decoder_metadata(YOLOXDecoder()).items()}
    assert isinstance(decoder_from_meta(meta), YOLOXDecoder)
    assert isinstance(decoder_from_meta({}), YOLOXDecoder)  # files written before decoders were named
    with pytest.raises(ValueError, match="need the decoder 'zero'.*known: gfl, yolox"):
        decoder_from_meta({"decoder": "zero"})
    assert set(DECODERS) == {"yolox", "gfl"}


def test_head_declares_its_loss_and_layouts():
    model = Model(TWO_LEVELS)
    head = model.detect
    assert head.loss == "yolox" and head.export_layouts == ("decoded", "per-level", "split", "nms")
    assert head.decoder.maps == ("reg", "obj", "cls") and head.decoder.has_objectness
    from utils.loss import LOSSES, build_loss

    assert type(build_loss(model)) is LOSSES["yolox"]
    head.loss = "qfl_dfl"  # a head whose loss this version does not have
    with pytest.raises(ValueError, match="trained by the loss 'qfl_dfl'"):
        build_loss(model)


def test_grid_cache_follows_input_size():
    model = Model(TWO_LEVELS).eval()
    head = model.detect
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 64))
        grid, stride = head._grids([(8, 16), (4, 8)], [4.0, 8.0])
        assert torch.equal(grid, make_grid([(8, 16), (4, 8)], [4.0, 8.0])[0])
        assert model(torch.zeros(1, 3, 64, 32)).shape == (1, 16 * 8 + 8 * 4, 7)  # another size: a new grid


# ---- a second head family on the contract: no objectness, boxes as distances from the cell centre -----------
class LTRBDecoder(BoxDecoder):
    """Boxes as exp(l, t, r, b) strides from the anchor's centre, sigmoid class scores, no objectness."""

    name = "test_ltrb"
    maps = ("reg", "cls")
    has_objectness = False
    description = "reg_s [B, 4, H, W] log distances (l, t, r, b) in strides from the cell centre, cls_s sigmoid"

    def channels(self, nc):
        return (4, nc)

    def activate(self, logits):
        reg, cls = logits
        return reg, cls.sigmoid()

    def boxes(self, reg, grid, stride):
        centre, dist = (grid + 0.5) * stride, torch.exp(reg) * stride
        lo, hi = centre - dist[..., :2], centre + dist[..., 2:]
        return torch.cat(((lo + hi) / 2, hi - lo), -1)

    def decode(self, flat, grid, stride):
        return torch.cat((self.boxes(flat[..., :4], grid, stride), torch.ones_like(flat[..., :1]), flat[..., 4:]), -1)


class LTRBHead(DetectionHead):
    loss = "none"

    def __init__(self, nc=80, anchors=1, ch=()):
        super().__init__(nc, len(ch))
        self.decoder = LTRBDecoder()
        self.reg_preds = torch.nn.ModuleList(torch.nn.Conv2d(c, 4, 1) for c in ch)
        self.cls_preds = torch.nn.ModuleList(torch.nn.Conv2d(c, nc, 1) for c in ch)

    def level_sizes(self, xs):
        return [tuple(x.shape[-2:]) for x in xs]

    def logits(self, xs):
        return [(r(x) * 0.1, c(x)) for x, r, c in zip(xs, self.reg_preds, self.cls_preds)]


@pytest.fixture
def ltrb_model(monkeypatch):
    """A YAML model ending in LTRBHead, its block and decoder registered for the test only."""
    from models import heads, registry

    monkeypatch.setitem(registry.BLOCKS, "LTRBHead", registry.BlockSpec(LTRBHead, rule="detect"))
    monkeypatch.setitem(heads.DECODERS, LTRBDecoder.name, LTRBDecoder)
    cfg = {"nc": 3, "backbone": [[-1, 1, "Conv", [8, 3, 2]], [-1, 1, "Conv", [8, 3, 2]], [-1, 1, "Conv", [8, 3, 2]],
                                 [-1, 1, "Conv", [8, 3, 2]]],
           "head": [[[2, 3], 1, "LTRBHead", ["nc", 1]]]}
    return randomize_bn(Model(cfg)).eval()


def test_a_head_without_objectness_needs_no_change_elsewhere(ltrb_model, tmp_path):
    """The eval output, one-forward evaluation, NMS, every export layout, the ONNX file's post-processing and
    the Detector all work for a head the rest of the code has never heard of."""
    from utils.checkpoints import save_checkpoint
    from utils.export.exporter import run_export
    from utils.export.layouts import ExportModel
    from utils.export.options import ExportOptions
    from utils.export.rewrite import prepare_for_export
    from utils.infer.backends import forward
    from utils.infer.nms import non_max_suppression
    from tests.support import ort_decoded

    model = ltrb_model
    x = torch.rand(2, 3, 64, 96) * 255
    with torch.no_grad():
        out = model(x)
        decoded, raw = forward(model, x, with_raw=True)
    assert model.stride.tolist() == [8.0, 16.0] and out.shape == (2, 8 * 12 + 4 * 6, 5 + 3)
    assert out[..., 4].eq(1).all() and [r.shape[1] for r in raw] == [4 + 3] * 2  # no objectness channel
    torch.testing.assert_close(decoded, out, rtol=1e-6, atol=1e-6)
    centre = (torch.tensor([5.0, 2.0]) + 0.5) * 8  # level 0, cell (x 5, y 2): its box is centred near it
    assert (out[0, 2 * 12 + 5, :2] - centre).abs().max() < 8
    assert len(non_max_suppression(out, 0.0, 0.5)[0]) > 0
    with torch.no_grad():
        for layout in ("per-level", "split", "decoded"):
            wrapped = ExportModel(prepare_for_export(model), layout)
            got = wrapped.format.decode([t.numpy() for t in wrapped(x)] if layout != "decoded" else [wrapped(x)])
            want = out if layout != "split" else torch.cat((out[..., :4], out[..., 4:5], out[..., 5:] * out[..., 4:5]), -1)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
        assert wrapped.format.with_layout("per-level").names == ["reg_s8", "cls_s8", "reg_s16", "cls_s16"]
    weights = save_checkpoint(tmp_path / "ltrb.pt", {"model": model.state_dict(), "yaml": model.yaml})
    res = run_export(ExportOptions(weights=weights, img_size=(64, 96), deploy=True, output=tmp_path / "l.onnx"))
    assert res["verification"][0].ok
    torch.testing.assert_close(ort_decoded(res["onnx"], x[:1]), out[:1], rtol=1e-4, atol=1e-3)
