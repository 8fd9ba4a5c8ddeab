"""Official YOLOX checkpoints <-> this project's YAML models: one table of layer prefixes.

Official YOLOX (Megvii) names modules backbone.backbone.dark3.1..., head.cls_convs.0...; the YAML
models in models/yolox*.yaml lay the same modules out as layers 0..33 with the same submodule
names (conv1/conv2/conv3/m, dconv/pconv, conv/bn), so a key converts by swapping its layer prefix.
"""
from __future__ import annotations

import torch

# YAML layer index -> official module prefix, for the layout of models/yolox{n,t,s,m,l,x}.yaml.
# Layers 11, 15 (Upsample) and 12, 16, 19, 22 (Concat) hold no weights.
OFFICIAL_PREFIX = {
    0: "backbone.backbone.stem",
    1: "backbone.backbone.dark2.0", 2: "backbone.backbone.dark2.1",
    3: "backbone.backbone.dark3.0", 4: "backbone.backbone.dark3.1",
    5: "backbone.backbone.dark4.0", 6: "backbone.backbone.dark4.1",
    7: "backbone.backbone.dark5.0", 8: "backbone.backbone.dark5.1", 9: "backbone.backbone.dark5.2",
    10: "backbone.lateral_conv0", 13: "backbone.C3_p4", 14: "backbone.reduce_conv1", 17: "backbone.C3_p3",
    18: "backbone.bu_conv2", 20: "backbone.C3_n3", 21: "backbone.bu_conv1", 23: "backbone.C3_n4",
    24: "head.stems.0", 25: "head.stems.1", 26: "head.stems.2",
    27: "head.cls_convs.0", 28: "head.reg_convs.0",
    29: "head.cls_convs.1", 30: "head.reg_convs.1",
    31: "head.cls_convs.2", 32: "head.reg_convs.2",
    33: "head",  # DetectX: cls_preds / reg_preds / obj_preds
}
# Official model -> YAML file, told apart by the stem's output channels (and depthwise convs for nano).
# (stem width, depthwise) -> bundled model file; (16, False) is the Nano exp with depthwise off
_STEM_CHANNELS = {(16, True): "yoloxn.yaml", (16, False): "yoloxn_dense.yaml", (24, False): "yoloxt.yaml",
                  (32, False): "yoloxs.yaml", (48, False): "yoloxm.yaml", (64, False): "yoloxl.yaml",
                  (80, False): "yoloxx.yaml"}
_STEM_KEY = "backbone.backbone.stem.conv.conv.weight"


def is_official(state_dict: dict) -> bool:
    return any(k.startswith("backbone.backbone.") for k in state_dict)


def official_to_project(state_dict: dict) -> dict:
    """Rename official keys to ``model.<layer>.<rest>``; keys with no known prefix are kept as they are."""
    by_length = sorted(((p, i) for i, p in OFFICIAL_PREFIX.items()), key=lambda pi: -len(pi[0]))
    out = {}
    for key, value in state_dict.items():
        for prefix, i in by_length:
            if key.startswith(prefix + "."):
                key = f"model.{i}.{key[len(prefix) + 1:]}"
                break
        out[key] = value
    return out


def project_to_official(state_dict: dict) -> dict:
    """The inverse renaming, for writing checkpoints that official YOLOX tools can read."""
    out = {}
    for key, value in state_dict.items():
        parts = key.split(".", 2)
        if len(parts) == 3 and parts[0] == "model" and parts[1].isdigit() and int(parts[1]) in OFFICIAL_PREFIX:
            key = f"{OFFICIAL_PREFIX[int(parts[1])]}.{parts[2]}"
        out[key] = value
    return out


def infer_official_cfg(state_dict: dict) -> tuple[str, int]:
    """(model file name, number of classes) of an official YOLOX state_dict."""
    if _STEM_KEY not in state_dict:
        raise ValueError(f"not an official YOLOX CSPDarknet checkpoint: no '{_STEM_KEY}'; pass the model YAML with --cfg")
    base = int(state_dict[_STEM_KEY].shape[0])
    depthwise = "backbone.backbone.dark2.0.dconv.conv.weight" in state_dict
    name = _STEM_CHANNELS.get((base, depthwise))
    if name is None:
        raise ValueError(f"official checkpoint with stem width {base} (depthwise={depthwise}) matches no "
                       f"bundled model file; pass the model YAML with --cfg")
    nc = int(state_dict["head.cls_preds.0.weight"].shape[0])
    return name, nc


def as_float_tensors(state_dict: dict) -> dict:
    """Tensors only (official checkpoints may carry other entries), floating ones as float32."""
    return {k: (v.float() if v.is_floating_point() else v) for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
