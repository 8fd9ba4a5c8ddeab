"""EasyCV (YOLOX-PAI) checkpoints onto YAML models: key names, the model file, the input they expect.

EasyCV's YOLOX holds ``backbone`` (YOLOPAFPN: its own ``backbone`` RepVGGYOLOX, the neck's modules,
the ASFF layers) and ``head``. The RepVGG stages map onto layers 0-9 of every PAI model file: stage0
is layer 0, stage k's stride-2 block layer 2k - 1 and its repeats layer 2k (a stack of copies), stage
4's MT_SPPF (cv1, cv2) layer 9 (conv1, conv2). Neck modules keep their names below their layer (one
table per config, EASYCV_LAYOUTS); a YOLOXHead's stems and branch convs are rows of their own, a
TOODHead is one layer named as EasyCV's head. Deployed checkpoints (RepVGG blocks folded into
rbr_reparam) load onto a model whose blocks are folded first.

EasyCV feeds its models RGB images normalised by the ImageNet mean and std (on 0-255), letterboxed
at the top left with 114 (its PreProcess): a model loaded from EasyCV weights gets that ``input``
(models/input_norm.py) and the top-left letterbox, so it takes the same BGR 0-255 images as ours.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

EASYCV_INPUT = {"order": "rgb", "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}
_BACKBONE = "backbone.backbone."
_STAGE0 = _BACKBONE + "stage0."


@dataclass(frozen=True)
class EasyCVLayout:
    """Where one EasyCV config's modules sit in its bundled model file."""

    file: str
    neck: dict  # YOLOPAFPN attribute (key prefix after 'backbone.') -> layer
    head: int  # first head layer
    whole_head: bool = False  # TOODHead: one layer; else stems (3), cls/reg convs (6), DetectX rows


_PAFPN = {"lateral_conv0": 10, "C3_p4": 13, "reduce_conv1": 14, "C3_p3": 17,
          "bu_conv2": 18, "C3_n3": 20, "bu_conv1": 21, "C3_n4": 23}
_ASFF = {"asff_1": 24, "asff_2": 25, "asff_3": 26}  # EasyCV's ASFF levels 0, 1, 2 = P5, P4, P3
_GSCONV = {"gsconv1": 10, "vovGSCSP1": 13, "gsconv2": 14, "gsconv3": 17, "vovGSCSP2": 18,
           "gsconv4": 19, "vovGSCSP3": 21, "gsconv5": 22, "vovGSCSP4": 24}
# (ASFF type, GSConv neck, TOOD head) -> layout; one per EasyCV config with a bundled model file
EASYCV_LAYOUTS = {
    (None, False, False): EasyCVLayout("pai_yoloxs.yaml", _PAFPN, 24),
    ("ASFF", False, False): EasyCVLayout("pai_yoloxs_asff.yaml", {**_PAFPN, **_ASFF}, 27),
    ("ASFF_sim", False, False): EasyCVLayout("pai_yoloxs_asff_sim.yaml", {**_PAFPN, **_ASFF}, 27),
    ("ASFF", False, True): EasyCVLayout("pai_yoloxs_asff_tood3.yaml", {**_PAFPN, **_ASFF}, 27, whole_head=True),
    (None, True, False): EasyCVLayout("pai_yoloxs_gsconv.yaml", _GSCONV, 25),
}


def is_easycv(state_dict: dict) -> bool:
    """An EasyCV YOLOX-PAI state_dict (RepVGG backbone): its first stage is a RepVGG block."""
    return any(k.startswith(_STAGE0) for k in state_dict)


def easycv_layout(state_dict: dict) -> EasyCVLayout:
    """The layout of an EasyCV checkpoint, told by its module names; ValueError for a combination
    without a bundled model file."""
    def has(prefix):
        return any(k.startswith(prefix) for k in state_dict)

    asff = ("ASFF" if has("backbone.asff_1.stride_level_1.") else "ASFF_sim") if has("backbone.asff_") else None
    gsconv, tood = has("backbone.gsconv1."), has("head.inter_convs.")
    if gsconv and has("backbone.C3_p4."):
        raise ValueError("EasyCV checkpoint with the partial GSConv neck (neck_mode other than 'all'): no bundled "
                         "model file; models/pai_yoloxs_gsconv.yaml is neck_mode 'all'")
    layout = EASYCV_LAYOUTS.get((asff, gsconv, tood))
    if layout is None:
        parts = [name for name, on in (("ASFF" if asff == "ASFF" else "ASFF_sim", asff), ("GSConv neck", gsconv),
                                       ("TOOD head", tood)) if on]
        raise ValueError(f"EasyCV checkpoint with {' + '.join(parts)}: no bundled model file for that combination; "
                         f"bundled: {', '.join(v.file for v in EASYCV_LAYOUTS.values())}")
    return layout


def easycv_to_project(state_dict: dict, layout: EasyCVLayout | None = None) -> dict:
    """Rename EasyCV keys to ``model.<layer>.<rest>`` for its layout (by default told from the keys);
    keys of no known module are kept as they are (the load then names them)."""
    layout = layout or easycv_layout(state_dict)
    neck = sorted(layout.neck.items(), key=lambda kv: -len(kv[0]))  # asff_1 before a shorter prefix
    out = {}
    for key, value in state_dict.items():
        if key.startswith(_BACKBONE + "stage"):
            key = "model." + _backbone_key(key[len(_BACKBONE):])
        elif key.startswith("backbone."):
            rest = key[len("backbone."):]
            key = next((f"model.{i}.{rest[len(name) + 1:]}" for name, i in neck if rest.startswith(name + ".")), key)
        elif key.startswith("head."):
            key = f"model.{_head_key(key[len('head.'):], layout)}"
        out[key] = value
    return out


def _head_key(rest: str, layout: EasyCVLayout) -> str:
    if layout.whole_head:
        return f"{layout.head}.{rest}"
    m = re.fullmatch(r"(stems|cls_convs|reg_convs)\.(\d+)\.(.*)", rest)
    if m is None:  # cls_preds / reg_preds / obj_preds: DetectX's own names
        return f"{layout.head + 9}.{rest}"
    part, k, tail = m.group(1), int(m.group(2)), m.group(3)
    layer = {"stems": layout.head + k, "cls_convs": layout.head + 3 + 2 * k, "reg_convs": layout.head + 4 + 2 * k}[part]
    return f"{layer}.{tail}"


def _backbone_key(key: str) -> str:
    stage, rest = re.fullmatch(r"stage(\d)\.(.*)", key).groups()
    stage = int(stage)
    if stage == 0:  # one block, not a Sequential
        return f"0.{rest}"
    block, rest = rest.split(".", 1)
    if rest.startswith(("cv1.", "cv2.")):  # stage 4's MT_SPPF
        return "9." + rest.replace("cv1.", "conv1.", 1).replace("cv2.", "conv2.", 1)
    down = 2 * stage - 1
    return f"{down}.{rest}" if int(block) == 0 else f"{down + 1}.{int(block) - 1}.{rest}"
