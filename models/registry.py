"""The explicit table of blocks a YAML layer may name, each with its channel rule.

A new block is one new row here; the parser never changes. Nothing is looked up by evaluating text or
globals(): a name that is not in this table is an error that lists the known names.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from models.asff import ASFF
from models.common import C3, SPP, SPPF, Bottleneck, Concat, Conv, DWConv, Focus, GroupConv
from models.gsconv import GSBottleneck, GSConv, VoVGSCSP
from models.heads import DetectX, TOODHead, YOLOXHead, ZeroHead
from models.repgfpn import CSPStage
from models.repvgg import MTSPPF, RepConv, RepVGGBlock
from models.tinynas import ResConvBlock


@dataclass(frozen=True)
class BlockSpec:
    """How the parser turns one YAML row into modules.

    rule:
      "conv"    args[0] is the output channel count (scaled by width); input channels are inserted
                as the first argument.
      "concat"  output channels = sum of the inputs' channels (or equal channels for dim != 1).
      "same"    output channels = input channels (upsample, pooling, identity); args as written.
      "levels"  reads several layers (pyramid levels); the list of their channel counts is inserted as
                the first argument and the block says its output channels as ``c2`` (ASFF).
      "detect"  the list of input channel counts is appended to args; no output channels.
    repeats: ``number`` is the block's internal repeat count, scaled by depth_multiple and passed
      as the third argument (C3). Otherwise ``number`` copies are stacked as written, never scaled:
      official YOLOX has exactly two 3x3 convs per head branch at every model size.
    own_act: a row that chooses no activation gets the block's own default (RepVGG: ReLU, as EasyCV
      hard-codes it; MT_SPPF: ReLU) instead of the file-wide one.
    """

    cls: type
    rule: str = "conv"
    repeats: bool = False
    own_act: bool = False


BLOCKS: dict[str, BlockSpec] = {
    "Conv": BlockSpec(Conv),
    "DWConv": BlockSpec(DWConv),
    "GroupConv": BlockSpec(GroupConv),
    "Focus": BlockSpec(Focus),
    "Bottleneck": BlockSpec(Bottleneck),
    "C3": BlockSpec(C3, repeats=True),
    "SPP": BlockSpec(SPP),
    "SPPF": BlockSpec(SPPF),
    "RepVGGBlock": BlockSpec(RepVGGBlock, own_act=True),
    "MT_SPPF": BlockSpec(MTSPPF, own_act=True),
    "GSConv": BlockSpec(GSConv),
    "GSBottleneck": BlockSpec(GSBottleneck),
    "VoVGSCSP": BlockSpec(VoVGSCSP, repeats=True),
    "ASFF": BlockSpec(ASFF, rule="levels"),
    "RepConv": BlockSpec(RepConv, own_act=True),
    "ResConvBlock": BlockSpec(ResConvBlock),
    "CSPStage": BlockSpec(CSPStage, repeats=True),
    "Concat": BlockSpec(Concat, rule="concat"),
    "DetectX": BlockSpec(DetectX, rule="detect"),
    "YOLOXHead": BlockSpec(YOLOXHead, rule="detect"),
    "TOODHead": BlockSpec(TOODHead, rule="detect"),
    "ZeroHead": BlockSpec(ZeroHead, rule="detect"),
    "nn.Upsample": BlockSpec(nn.Upsample, rule="same"),
    "nn.MaxPool2d": BlockSpec(nn.MaxPool2d, rule="same"),
    "nn.Identity": BlockSpec(nn.Identity, rule="same"),
}
# Spellings seen in YAML files for the same torch modules.
ALIASES = {
    "Upsample": "nn.Upsample", "torch.nn.Upsample": "nn.Upsample",
    "MaxPool2d": "nn.MaxPool2d", "torch.nn.MaxPool2d": "nn.MaxPool2d",
    "Identity": "nn.Identity", "torch.nn.Identity": "nn.Identity",
    "Detect": "YOLOXHead",  # YOLOv5 layer lists build unchanged, with the anchor-free YOLOX head
    "CSPLayer": "C3", "BaseConv": "Conv", "SPPBottleneck": "SPP",
    "ConvBNAct": "Conv",  # DAMO-YOLO's names for the same blocks
}


def lookup(name: str) -> BlockSpec | None:
    """The spec for a module name, or None when it is not in the table."""
    if not isinstance(name, str):
        return None
    return BLOCKS.get(ALIASES.get(name, name))


def known_names() -> list[str]:
    return sorted(BLOCKS)
