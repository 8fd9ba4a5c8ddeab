"""YOLOX-PAI's TOOD head (EasyCV 0.11.7's TOODHead): YOLOX's decoupled head with TOOD's task-interactive
features and layer attention in front of the branches, on the head contract with YOLOX's decoder.

Per level k, with F = int(256 * width) hidden channels and S = ``stacked_convs``:
  x = stems[k](x)                                    1x1 Conv, as YOLOXHead
  X_1..X_S = inter_convs applied in turn             3x3 conv + GroupNorm + ReLU, ONE set shared by all levels
  cls_x = cls_decomps[k](X), reg_x = reg_decomps[k](X)   task decomposition, below
  cls_convs[k](cls_x) -> cls_preds; reg_convs[k](reg_x) -> reg_preds, obj_preds   as YOLOXHead

Task decomposition: layer attention w = sigmoid(conv1x1(relu(conv1x1(GAP(cat X))))) gives one weight
per stacked conv and image; the task feature is relu(GN(reduction_conv(cat(w_k * X_k)))). EasyCV
computes that as a per-image bmm with the attention-scaled kernel; scaling the features instead is
the same sum and exports as Mul + Conv, which every toolchain takes. Only the task-interactive part
of TOOD is here, as in EasyCV (no task-aligned predictor, no TAL assigner): outputs, SimOTA, the loss
and decoding are YOLOX's. ``conv_type`` 'repconv' makes the branch convs RepVGG blocks (folded for
deployment with the rest); 'dwconv' depthwise, as EasyCV's.

Submodule names are EasyCV's (mmcv ConvModule's ``conv`` and ``gn``), so its checkpoints load by name.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.activations import make_activation
from models.heads.yolox import YOLOXHead
from models.repvgg import RepVGGBlock

TOOD_CONV_TYPES = ("conv", "dwconv", "repconv")


class ConvGN(nn.Module):
    """Conv2d (no bias) -> GroupNorm -> activation: mmcv's ConvModule with a GN norm_cfg (names conv, gn)."""

    def __init__(self, c1, c2, k, groups, act="relu"):
        super().__init__()
        if c2 % groups:
            raise ValueError(f"GroupNorm with {groups} groups needs channels divisible by it, got {c2}")
        self.conv = nn.Conv2d(c1, c2, k, 1, k // 2, bias=False)
        self.gn = nn.GroupNorm(groups, c2)
        self.act = make_activation(act)

    def forward(self, x):
        return self.act(self.gn(self.conv(x)))


class TaskDecomposition(nn.Module):
    """One task's feature from the S stacked features of a level, weighted by layer attention."""

    def __init__(self, c, stacked, down_rate, groups, act="relu"):
        super().__init__()
        c_all = c * stacked
        if c_all // down_rate < 1:
            raise ValueError(f"layer attention squeezes {c_all} channels by {down_rate} to none")
        self.layer_attention = nn.Sequential(nn.Conv2d(c_all, c_all // down_rate, 1), nn.ReLU(inplace=True),
                                             nn.Conv2d(c_all // down_rate, stacked, 1), nn.Sigmoid())
        self.reduction_conv = ConvGN(c_all, c, 1, groups, act)

    def forward(self, feats: list[torch.Tensor], avg: torch.Tensor) -> torch.Tensor:
        w = self.layer_attention(avg).split(1, 1)  # S x [B, 1, 1, 1]: one Split op
        return self.reduction_conv(torch.cat([x * wk for x, wk in zip(feats, w)], 1))


class TOODHead(YOLOXHead):
    """TOOD head on plain per-level features: ``[[26, 25, 24], 1, TOODHead, [nc, anchors]]``.

    ``act``: stems and branch convs (the file-wide default, SiLU). ``inter_act``: the GroupNorm convs,
    the task decompositions and RepVGG branch convs (ReLU, as EasyCV hard-codes it).
    """

    def __init__(self, nc=80, anchors=1, ch=(), width=1.0, act=None, stacked_convs=3, la_down_rate=32,
                 conv_type="conv", gn_groups=32, inter_act="relu"):
        if conv_type not in TOOD_CONV_TYPES:
            raise ValueError(f"TOODHead conv_type must be one of {', '.join(TOOD_CONV_TYPES)}, got {conv_type!r}")
        if not isinstance(stacked_convs, int) or stacked_convs < 1:
            raise ValueError(f"TOODHead stacked_convs must be a positive integer, got {stacked_convs!r}")
        super().__init__(nc, anchors, ch, width, act, depthwise=conv_type == "dwconv")
        hidden = int(256 * width)
        if conv_type == "repconv":
            def pair():
                return nn.Sequential(RepVGGBlock(hidden, hidden, act=inter_act),
                                     RepVGGBlock(hidden, hidden, act=inter_act))
            self.cls_convs = nn.ModuleList(pair() for _ in ch)
            self.reg_convs = nn.ModuleList(pair() for _ in ch)
        # EasyCV passes stacked_convs * la_down_rate as the squeeze of the attention's hidden layer
        self.cls_decomps = nn.ModuleList(
            TaskDecomposition(hidden, stacked_convs, stacked_convs * la_down_rate, gn_groups, inter_act) for _ in ch)
        self.reg_decomps = nn.ModuleList(
            TaskDecomposition(hidden, stacked_convs, stacked_convs * la_down_rate, gn_groups, inter_act) for _ in ch)
        self.inter_convs = nn.ModuleList(ConvGN(hidden, hidden, 3, gn_groups, inter_act) for _ in range(stacked_convs))

    def logits(self, xs: list[torch.Tensor]) -> list[tuple]:
        feats = []
        for k, x in enumerate(xs):
            x = self.stems[k](x)
            stacked = []
            for conv in self.inter_convs:
                x = conv(x)
                stacked.append(x)
            avg = F.adaptive_avg_pool2d(torch.cat(stacked, 1), 1)  # [B, S * F, 1, 1]
            feats += [self.cls_convs[k](self.cls_decomps[k](stacked, avg)),
                      self.reg_convs[k](self.reg_decomps[k](stacked, avg))]
        return super(YOLOXHead, self).logits(feats)
