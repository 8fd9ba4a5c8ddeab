"""parse_model: YAML rows -> modules, scaling rules, and every error message."""
import copy

import pytest
import torch
import yaml

from models.parser import ModelConfigError, make_divisible, parse_model
from models.yolo import Model

TINY = {
    "nc": 3,
    "depth_multiple": 1.0,
    "width_multiple": 1.0,
    "backbone": [
        [-1, 1, "Conv", [16, 3, 2]],   # 0 /2
        [-1, 1, "Conv", [32, 3, 2]],   # 1 /4
        [-1, 1, "C3", [32]],           # 2
        [-1, 1, "Conv", [64, 3, 2]],   # 3 /8
    ],
    "head": [
        [[-1], 1, "Conv", [32, 1, 1]],             # 4
        [-1, 1, "nn.Upsample", ["None", 2, "nearest"]],  # 5 /4
        [[-1, 2], 1, "Concat", [1]],               # 6: 32 + 32
        [-1, 1, "Conv", [16, 3, 1]],               # 7 cls0
        [6, 1, "Conv", [16, 3, 1]],                # 8 reg0
        [3, 1, "Conv", [16, 3, 1]],                # 9 cls1
        [3, 1, "Conv", [16, 3, 1]],                # 10 reg1
        [[7, 8, 9, 10], 1, "DetectX", ["nc", "anchors"]],
    ],
}


def tiny(**changes):
    cfg = copy.deepcopy(TINY)
    cfg.update(changes)
    return cfg


def with_row(index, row, section="backbone"):
    cfg = tiny()
    cfg[section][index] = row
    return cfg


def build_error(cfg) -> str:
    with pytest.raises(ModelConfigError) as e:
        Model(cfg)
    return str(e.value)


def test_tiny_model_builds_with_channels_and_strides():
    model = Model(tiny())
    assert model.stride.tolist() == [4.0, 8.0]
    assert model.model[6].type == "Concat"
    assert model.model[7].conv.in_channels == 64  # concat of 32 + 32
    assert model.detect.nc == 3
    out = model.train()(torch.zeros(2, 3, 64, 96))
    assert [tuple(o.shape) for o in out] == [(2, 8, 16, 24), (2, 8, 8, 12)]


def test_make_divisible_rounds_up_to_multiple_of_8():
    assert make_divisible(64 * 0.375) == 24
    assert make_divisible(100 * 0.5) == 56
    assert make_divisible(1) == 8


def test_width_multiple_scales_and_rounds_channels():
    model = Model(tiny(width_multiple=0.3))
    assert model.model[0].conv.out_channels == make_divisible(16 * 0.3) == 8
    assert model.model[1].conv.out_channels == make_divisible(32 * 0.3) == 16


def test_depth_scales_c3_repeats_but_not_stacked_convs():
    for depth, expected_c3 in [(0.33, 3), (1.33, 12)]:
        cfg = tiny(depth_multiple=depth)
        cfg["backbone"][2] = [-1, 9, "C3", [32]]
        cfg["head"][3] = [-1, 2, "Conv", [16, 3, 1]]
        model = Model(cfg)
        assert len(model.model[2].m) == expected_c3
        stacked = model.model[7]
        assert isinstance(stacked, torch.nn.Sequential) and len(stacked) == 2  # never scaled
        assert stacked[0].conv.in_channels == 64 and stacked[1].conv.in_channels == 16


def test_relative_and_absolute_from_and_save_list():
    _, save, infos = parse_model(tiny(), source="tiny")
    assert save == [2, 3, 6, 7, 8, 9]  # outputs read later by a layer other than the next one
    assert infos[6].source == [-1, 2]


def test_yaml_without_detect_builds_feature_graph():
    cfg = tiny()
    cfg["head"] = cfg["head"][:3]
    cfg.pop("nc")
    model = Model(cfg)
    assert model.detect is None
    y = model.eval()(torch.zeros(1, 3, 64, 64))
    assert y.shape == (1, 64, 16, 16)
    assert model.stride.tolist() == [4.0]


def test_args_keywords_from_trailing_mapping():
    cfg = with_row(2, [-1, 2, "C3", [32, True, {"depthwise": True}]])
    model = Model(cfg)
    assert type(model.model[2].m[0].conv2).__name__ == "DWConv"


def test_yaml_none_string_and_nc_name_resolve(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(tiny()))
    model = Model(str(path))
    assert model.model[5].scale_factor == 2
    assert model.detect.cls_preds[0].out_channels == 3
    assert Model(str(path), nc=7).detect.cls_preds[0].out_channels == 7


def test_unknown_module_lists_known_ones():
    msg = build_error(with_row(1, [-1, 1, "Conv9", [32, 3, 2]]))
    assert "layer 1" in msg and "unknown module 'Conv9'" in msg
    assert "C3" in msg and "DetectX" in msg and "Focus" in msg


def test_error_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(with_row(1, [-1, 1, "Nope", [32]])))
    with pytest.raises(ModelConfigError, match=r"broken.yaml: layer 1: unknown module 'Nope'"):
        Model(str(path))


def test_from_pointing_forward_is_an_error():
    msg = build_error(with_row(1, [3, 1, "Conv", [32, 3, 2]]))
    assert "layer 1" in msg and "points forward" in msg


def test_from_out_of_range_is_an_error():
    msg = build_error(with_row(2, [-5, 1, "C3", [32]]))
    assert "layer 2" in msg and "out of range" in msg
    msg = build_error(with_row(2, ["x", 1, "C3", [32]]))
    assert "'from' must be an int or a list of ints" in msg


def test_wrong_number_of_args_shows_signature():
    msg = build_error(with_row(1, [-1, 1, "Conv", [32, 3, 2, None, 1, "silu", 1, 99]]))
    assert "layer 1" in msg and "wrong arguments for Conv" in msg and "c1, c2, k=1" in msg


def test_wrong_type_of_args():
    msg = build_error(with_row(1, [-1, 1, "Conv", ["wide", 3, 2]]))
    assert "layer 1" in msg and "output channel count" in msg
    msg = build_error(with_row(1, [-1, 1, "Conv", [32, "three", 2]]))
    assert "layer 1" in msg and "Conv(32, 'three', 2" in msg
    msg = build_error(with_row(1, [-1, 1, "Conv", 32]))
    assert "args must be a list" in msg


def test_bad_row_and_number():
    assert "[from, number, module, args]" in build_error(with_row(1, [-1, 1, "Conv"]))
    assert "number must be a positive integer" in build_error(with_row(1, [-1, 0, "Conv", [32]]))


def test_concat_channel_mismatch_along_other_dims():
    msg = build_error(with_row(2, [[-1, 0], 1, "Concat", [2]], "head"))
    assert "layer 6" in msg and "Concat along dimension 2 needs equal channels" in msg


def test_concat_spatial_mismatch_names_layer():
    cfg = tiny()
    cfg["head"][2] = [[-1, 3], 1, "Concat", [1]]  # /4 with /8
    msg = build_error(cfg)
    assert "layer 6 (Concat) cannot take inputs of shape" in msg


def test_nc_missing():
    cfg = tiny()
    cfg.pop("nc")
    msg = build_error(cfg)
    assert "'nc' (number of classes) is missing" in msg and "layer 11" in msg


def test_not_a_mapping_and_missing_backbone():
    with pytest.raises(ModelConfigError, match="must be a mapping"):
        Model([1, 2])
    with pytest.raises(ModelConfigError, match="'backbone' must be a non-empty list"):
        Model({"nc": 1})


def test_missing_file_and_invalid_yaml(tmp_path):
    with pytest.raises(FileNotFoundError, match="model file not found"):
        Model(str(tmp_path / "none.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("backbone: [[-1, 1, Conv\n")
    with pytest.raises(ModelConfigError, match="bad.yaml: not valid YAML"):
        Model(str(bad))


def test_detectx_must_be_last_and_anchor_free():
    cfg = tiny()
    cfg["head"].append([-1, 1, "nn.Identity", []])
    assert "reads from a layer with no feature output" in build_error(cfg)
    cfg = tiny(anchors=[[10, 13, 16, 30]])
    assert "anchors must be 1" in build_error(cfg)


def test_no_eval_of_yaml_strings():
    # a Python expression where a module name belongs must be rejected, not executed
    msg = build_error(with_row(1, [-1, 1, "__import__('os').system('true')", [32]]))
    assert "unknown module" in msg


def test_bundled_file_found_by_name():
    assert Model("yoloxs.yaml").yaml["width_multiple"] == 0.5


YOLOV5_V6 = """
nc: 80
depth_multiple: 0.33
width_multiple: 0.50
anchors:
  - [10,13, 16,30, 33,23]
  - [30,61, 62,45, 59,119]
  - [116,90, 156,198, 373,326]
backbone:
  [[-1, 1, Conv, [64, 6, 2, 2]],
   [-1, 1, Conv, [128, 3, 2]],
   [-1, 3, C3, [128]],
   [-1, 1, Conv, [256, 3, 2]],
   [-1, 6, C3, [256]],
   [-1, 1, Conv, [512, 3, 2]],
   [-1, 9, C3, [512]],
   [-1, 1, Conv, [1024, 3, 2]],
   [-1, 3, C3, [1024]],
   [-1, 1, SPPF, [1024, 5]],
  ]
head:
  [[-1, 1, Conv, [512, 1, 1]],
   [-1, 1, nn.Upsample, [None, 2, 'nearest']],
   [[-1, 6], 1, Concat, [1]],
   [-1, 3, C3, [512, False]],
   [-1, 1, Conv, [256, 1, 1]],
   [-1, 1, nn.Upsample, [None, 2, 'nearest']],
   [[-1, 4], 1, Concat, [1]],
   [-1, 3, C3, [256, False]],
   [-1, 1, Conv, [256, 3, 2]],
   [[-1, 14], 1, Concat, [1]],
   [-1, 3, C3, [512, False]],
   [-1, 1, Conv, [512, 3, 2]],
   [[-1, 10], 1, Concat, [1]],
   [-1, 3, C3, [1024, False]],
   [[17, 20, 23], 1, Detect, [nc, anchors]],
  ]
"""


def test_ultralytics_yolov5_v6_yaml_builds_unchanged():
    cfg = yaml.safe_load(YOLOV5_V6)
    # YOLOv5s v6 is 7,235,389 parameters, 229,245 of them in its anchor-based Detect layer.
    features = copy.deepcopy(cfg)
    features["head"] = features["head"][:-1]
    assert sum(p.numel() for p in Model(features).parameters()) == 7_235_389 - 229_245
    model = Model(cfg)  # Detect becomes the anchor-free YOLOX head (yolox-s head: 1,920,895)
    assert sum(p.numel() for p in model.parameters()) == 7_235_389 - 229_245 + 1_920_895
    assert model.stride.tolist() == [8.0, 16.0, 32.0]
    assert model.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 84, 85)


def test_yolov5_v5_yaml_with_detect_is_yolox_s():
    """YOLOv5 v5.0's yolov5s.yaml (Focus, SPP) with the YOLOX head has exactly YOLOX-s's parameters."""
    cfg = yaml.safe_load(YOLOV5_V6)
    cfg["backbone"][0] = [-1, 1, "Focus", [64, 3]]
    cfg["backbone"][4] = [-1, 9, "C3", [256]]
    cfg["backbone"][8] = [-1, 1, "SPP", [1024, [5, 9, 13]]]
    cfg["backbone"][9] = [-1, 3, "C3", [1024, False]]
    assert sum(p.numel() for p in Model(cfg).parameters()) == 8_968_255
