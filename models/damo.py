"""DAMO-YOLO checkpoints (modelscope 1.40.2's / DAMO-YOLO's module names) onto models/damoyolo_{t,s,m,l}.yaml.

DAMO's detector holds ``backbone`` (TinyNAS: ``block_list`` of stages for the ResNet-like T and S,
``csp_stage`` of CSP-wrapped stages for M and L), ``neck`` (GiraffeNeckV2: bu_conv* and merge_*) and
``head`` (ZeroHead: gfl_cls, gfl_reg, scales). The model files write the same modules as rows, in DAMO's
order, so a layout (how many blocks each stage has) gives every module's layer. DAMO's ConvKXBN (conv1,
bn1) is a Conv without activation here (conv, bn); ZeroHead's extra class channel (modelscope always
builds nc + 1 and drops the last at inference) and its ``integral.project`` buffer (the bins 0..reg_max)
are dropped. DAMO's models take RGB 0-255 images: the model files say so with their ``input`` key.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

DAMO_INPUT = {"order": "rgb", "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
# GiraffeNeckV2's modules, by their offset from the first neck row (models/damoyolo_*.yaml)
_NECK = {"bu_conv13": 0, "merge_3": 2, "bu_conv24": 4, "merge_4": 6, "merge_5": 9, "bu_conv57": 10,
         "merge_7": 12, "bu_conv46": 13, "bu_conv76": 14, "merge_6": 16}
_HEAD_OFFSET = 17
_DROPPED = re.compile(r"^head\.integral\.project$")  # the bins 0..reg_max: GFLDecoder makes them
LEGACY_COCO_ROWS = 81  # class rows of a COCO checkpoint with the legacy extra one


@dataclass(frozen=True)
class DamoLayout:
    """Where one DAMO-YOLO size's modules sit in its model file.

    res (T, S): ``blocks`` per TinyNAS stage (its L); a stage is a row for its first block, SPP after the
    last stage's first block, then a row stacking the rest. csp (M, L): ``blocks`` per CSP stage (the
    residual blocks its CSPWrapper runs); a stage is a downsampling Conv row, SPP in the last, then the
    shortcut Conv, start Conv, the stacked blocks, Concat and the fusing Conv.
    """

    file: str
    csp: bool
    stem: int  # the Focus conv's output channels
    blocks: tuple

    def prefixes(self) -> dict[str, str]:
        """DAMO module prefix -> ``model.<layer>[.<index in a stack>]``."""
        table = {}
        layer = 1
        if self.csp:
            table["backbone.csp_stage.0"] = "model.0"
            for w, n in enumerate(self.blocks, 1):
                last = w == len(self.blocks)
                table[f"backbone.csp_stage.{w}.downsampler"] = f"model.{layer}"
                layer += 1
                if last:
                    table[f"backbone.csp_stage.{w}.spp"] = f"model.{layer}"
                    layer += 1
                if n:
                    table[f"backbone.csp_stage.{w}.conv_shortcut"] = f"model.{layer}"
                    table[f"backbone.csp_stage.{w}.conv_start"] = f"model.{layer + 1}"
                    table.update(_stack(f"backbone.csp_stage.{w}.convstem", 0, layer + 2, n))
                    table[f"backbone.csp_stage.{w}.conv_fuse"] = f"model.{layer + 4}"
                    layer += 5
        else:
            table["backbone.block_list.0"] = "model.0"
            for s, n in enumerate(self.blocks, 1):
                last = s == len(self.blocks)
                table[f"backbone.block_list.{s}.block_list.0"] = f"model.{layer}"
                layer += 1
                first_repeat = 1
                if last:  # SuperResStem puts SPP after its first block
                    table[f"backbone.block_list.{s}.block_list.1"] = f"model.{layer}"
                    layer, first_repeat = layer + 1, 2
                if n > 1:
                    table.update(_stack(f"backbone.block_list.{s}.block_list", first_repeat, layer, n - 1))
                    layer += 1
        table.update({f"neck.{name}": f"model.{layer + offset}" for name, offset in _NECK.items()})
        table["head"] = f"model.{layer + _HEAD_OFFSET}"
        return table


def _stack(prefix: str, first: int, layer: int, n: int) -> dict:
    """Blocks first..first + n - 1 of a DAMO ModuleList as a row of n stacked copies (a plain module if one)."""
    return {f"{prefix}.{first + j}": f"model.{layer}" + (f".{j}" if n > 1 else "") for j in range(n)}


DAMO_LAYOUTS = {
    "t": DamoLayout("damoyolo_t.yaml", False, 24, (2, 2, 2, 2, 1)),
    "s": DamoLayout("damoyolo_s.yaml", False, 32, (1, 5, 3, 2, 1)),
    "m": DamoLayout("damoyolo_m.yaml", True, 32, (1, 3, 7, 2)),
    "l": DamoLayout("damoyolo_l.yaml", True, 32, (2, 4, 9, 3)),
}


def is_damo(state_dict: dict) -> bool:
    """A DAMO-YOLO state_dict: a TinyNAS backbone and a GiraffeNeckV2."""
    return any(k.startswith(("backbone.block_list.0.", "backbone.csp_stage.0.")) for k in state_dict) and \
        any(k.startswith("neck.merge_") for k in state_dict)


def damo_layout(state_dict: dict) -> DamoLayout:
    """The layout of a DAMO checkpoint, told by its stem width and block counts; ValueError otherwise."""
    csp = any(k.startswith("backbone.csp_stage.") for k in state_dict)
    prefix = "backbone.csp_stage.0" if csp else "backbone.block_list.0"
    stem = state_dict.get(f"{prefix}.conv.conv.weight")
    for layout in DAMO_LAYOUTS.values():
        if layout.csp == csp and stem is not None and stem.shape[0] == layout.stem and \
                all(any(k.startswith(p + ".") for k in state_dict) for p in layout.prefixes() if p != "head"):
            if _block_count(state_dict, csp) == sum(layout.blocks):
                return layout
    raise ValueError("DAMO-YOLO checkpoint whose backbone matches none of T, S, M, L "
                     f"({', '.join(v.file for v in DAMO_LAYOUTS.values())}); pass the model YAML with --cfg")


def _block_count(state_dict: dict, csp: bool) -> int:
    """Residual blocks (their RepConv, conv2.rbr_*; SPP has a conv2 too) in the backbone."""
    pattern = r"^backbone\.csp_stage\.(\d+)\.convstem\.(\d+)\.conv2\.rbr_" if csp else \
        r"^backbone\.block_list\.(\d+)\.block_list\.(\d+)\.conv2\.rbr_"
    return len({m.groups() for k in state_dict if (m := re.match(pattern, k))})


def damo_classes(state_dict: dict) -> int:
    """Classes of a DAMO checkpoint: its class conv's rows, less modelscope's / DAMO's legacy extra row when
    there are 81 (COCO's 80 + 1; pass nc to load_model for a data set of 81 classes)."""
    rows = int(state_dict["head.gfl_cls.0.weight"].shape[0])
    return rows - 1 if rows == LEGACY_COCO_ROWS else rows


def damo_to_project(state_dict: dict, layout: DamoLayout, nc: int | None = None) -> dict:
    """Rename DAMO keys to ``model.<layer>.<rest>``; the class convs keep their first ``nc`` rows
    (default: damo_classes)."""
    nc = damo_classes(state_dict) if nc is None else nc
    table = sorted(layout.prefixes().items(), key=lambda kv: -len(kv[0]))
    out = {}
    for key, value in state_dict.items():
        if _DROPPED.match(key):
            continue
        prefix, ours = next(((p, o) for p, o in table if key.startswith(p + ".")), (None, None))
        if prefix is None:
            out[key] = value  # named in the load error
            continue
        rest = _rename_convkxbn(key[len(prefix) + 1:])
        if prefix == "head" and rest.startswith("gfl_cls."):
            value = value[:nc]
        out[f"{ours}.{rest}"] = value
    return out


def _rename_convkxbn(rest: str) -> str:
    """DAMO's ConvKXBN (conv1, bn1), alone in a residual block or wrapped in ConvKXBNRELU (conv), -> conv, bn."""
    rest = re.sub(r"(^|\.)(conv1|residual_proj)\.conv1\.", r"\1\2.conv.", rest)
    rest = re.sub(r"(^|\.)(conv1|residual_proj)\.bn1\.", r"\1\2.bn.", rest)
    rest = re.sub(r"^conv\.conv1\.", "conv.", rest)
    return re.sub(r"^conv\.bn1\.", "bn.", rest)
