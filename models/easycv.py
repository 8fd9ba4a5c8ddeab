"""EasyCV (YOLOX-PAI) checkpoints onto YAML models: key names, the model file, the input they expect.

EasyCV's YOLOX holds ``backbone`` (YOLOPAFPN, whose own ``backbone`` is RepVGGYOLOX) and ``head``.
The neck and head keep official YOLOX's names, so official YOLOX's prefix table converts them; the
RepVGG stages map onto models/pai_yoloxs.yaml's layers 0-9: stage0 is layer 0, stage k's stride-2
block layer 2k - 1 and its repeats layer 2k (a stack of copies), stage 4's MT_SPPF (cv1, cv2) layer
9 (conv1, conv2). Deployed checkpoints (RepVGG blocks folded into rbr_reparam) load onto a model
whose blocks are folded first.

EasyCV feeds its models RGB images normalised by the ImageNet mean and std (on 0-255), letterboxed
at the top left with 114 (its PreProcess): a model loaded from EasyCV weights gets that ``input``
(models/input_norm.py) and the top-left letterbox, so it takes the same BGR 0-255 images as ours.
"""
from __future__ import annotations

import re

from models.yolox_official import official_to_project

EASYCV_INPUT = {"order": "rgb", "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}
_BACKBONE = "backbone.backbone."
_STAGE0 = _BACKBONE + "stage0."
# Parts of the other YOLOX-PAI configs, by their attribute names in EasyCV's YOLOPAFPN and TOODHead;
# their model files come with issue 16.
_NOT_YET = {"ASFF (use_att)": re.compile(r"^backbone\.asff_\d\."),
            "GSConv neck": re.compile(r"^backbone\.(gsconv|vovGSCSP)\d\."),
            "TOOD head": re.compile(r"^head\.(inter_convs|cls_decomps|reg_decomps)\.")}


def is_easycv(state_dict: dict) -> bool:
    """An EasyCV YOLOX-PAI state_dict (RepVGG backbone): its first stage is a RepVGG block."""
    return any(k.startswith(_STAGE0) for k in state_dict)


def is_deployed(state_dict: dict) -> bool:
    """RepVGG blocks already folded (EasyCV's export calls switch_to_deploy)."""
    return any(".rbr_reparam." in k for k in state_dict)


def infer_easycv_cfg(state_dict: dict) -> str:
    """The bundled model file of an EasyCV checkpoint; ValueError naming what is not supported yet."""
    found = [name for name, pattern in _NOT_YET.items() if any(pattern.search(k) for k in state_dict)]
    if found:
        raise ValueError(f"EasyCV checkpoint with {', '.join(found)}: not supported yet; PAI-YOLOXs "
                         "(RepVGG backbone, YOLOX-s neck and head) is")
    return "pai_yoloxs.yaml"


def easycv_to_project(state_dict: dict) -> dict:
    """Rename EasyCV keys to ``model.<layer>.<rest>`` (pai_yoloxs.yaml's layout)."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith(_BACKBONE + "stage"):
            key = "model." + _backbone_key(key[len(_BACKBONE):])
        else:
            key = next(iter(official_to_project({key: None})))
        out[key] = value
    return out


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
