"""EasyCV's YOLOX-PAI module files (pai-easycv 0.11.7) as references for tests and benchmarks.

tests/install_reference.sh installs pai-easycv with --no-deps: its package ``__init__`` files import
mmcv, the registries and the rest of a training framework that building the modules does not need.
So the parent packages are stand-ins whose ``__path__`` is the installed folder (their ``__init__``
files never run) and each module file is imported as it is, unchanged; its own imports of sibling
files (``easycv.models.utils.ops``) resolve through the same stand-ins.
"""
from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

from torch import nn

from tests.reference import randomize_norms  # noqa: F401  (re-exported: the tests import it from here)

EASYCV_VERSION = "0.11.7"


def easycv_root() -> Path | None:
    """The installed ``easycv`` folder, or None. With REQUIRE_REFERENCE=1 (CI) a missing one is an error."""
    from tests.reference import reference_distribution

    dist = reference_distribution("pai-easycv", EASYCV_VERSION)
    return None if dist is None else Path(dist.locate_file("easycv"))


def easycv_module(name: str) -> types.ModuleType:
    """Import ``easycv.<...>`` module file ``name`` without running any package ``__init__``."""
    root = easycv_root()
    if root is None:
        raise ImportError("pai-easycv not installed (bash tests/install_reference.sh)")
    if name.split(".")[0] != "easycv":
        raise ValueError(f"not an easycv module: {name}")
    for init in [root / "__init__.py", *root.rglob("__init__.py")]:  # every package: a stand-in
        package = ".".join(("easycv", *init.parent.relative_to(root).parts))
        if package not in sys.modules:
            stand_in = types.ModuleType(package)
            stand_in.__path__ = [str(init.parent)]
            sys.modules[package] = stand_in
    _install_framework_stubs()
    return importlib.import_module(name)


# EasyCV's YOLOPAFPN and head arguments of each YOLOX-PAI config with a bundled model file (at s)
PAI_CONFIGS = {
    "pai_yoloxs": ({}, "YOLOXHead"),
    "pai_yoloxs_asff": ({"use_att": "ASFF"}, "YOLOXHead"),
    "pai_yoloxs_asff_sim": ({"use_att": "ASFF_sim"}, "YOLOXHead"),
    "pai_yoloxs_asff_tood3": ({"use_att": "ASFF"}, "TOODHead"),
    "pai_yoloxs_gsconv": ({"neck_type": "gsconv", "neck_mode": "all"}, "YOLOXHead"),
}


def easycv_pai_model(name: str, nc: int = 8, seed: int = 0) -> nn.ModuleDict:
    """EasyCV's model of one config (YOLOPAFPN with RepVGGYOLOX under 'backbone', the head under 'head',
    the names EasyCV's YOLOX detector holds them by) with random norm statistics, in eval mode."""
    neck_args, head = PAI_CONFIGS[name]
    pafpn = easycv_module("easycv.models.detection.detectors.yolox.yolo_pafpn")
    if head == "TOODHead":
        head_cls = easycv_module("easycv.models.detection.detectors.yolox.tood_head").TOODHead
    else:
        head_cls = easycv_module("easycv.models.detection.detectors.yolox.yolo_head").YOLOXHead
    ref = nn.ModuleDict({"backbone": pafpn.YOLOPAFPN(0.33, 0.5, backbone="RepVGGYOLOX", **neck_args),
                         "head": head_cls(nc, model_type="s")})
    randomize_norms(ref, seed=seed)
    return ref.eval()


def easycv_forward(ref: nn.ModuleDict, x):
    """EasyCV's YOLOX.forward in eval mode: decoded [B, anchors, 5 + nc]."""
    return ref["head"](ref["backbone"](x))


class _Registry:
    """Stand-in for EasyCV's mmcv-based registries: register_module() only records the class."""

    def __init__(self, name):
        self.name, self.modules = name, {}

    def register_module(self, name=None, force=False, module=None):
        """As mmcv's: @register_module, @register_module() or register_module(module=cls)."""
        if isinstance(name, type):  # used bare, as a decorator
            name, module = None, name

        def record(cls):
            self.modules[name or cls.__name__] = cls
            return cls
        return record(module) if module is not None else record


class ConvModule(nn.Sequential):
    """Stand-in for mmcv's ConvModule as the TOOD head builds it (checked against mmcv-lite 2.2.0's:
    same submodule names, parameters and outputs): conv, then the norm named by its type (``gn`` for
    GroupNorm, ``bn`` for BatchNorm), then ``activate`` (ReLU unless act_cfg is None); the conv has a
    bias only without a norm when bias is 'auto'."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias="auto", conv_cfg=None, norm_cfg=None, act_cfg=dict(type="ReLU"), inplace=True):
        super().__init__()
        if conv_cfg is not None:
            raise NotImplementedError("stub from tests/easycv_reference.py: conv_cfg")
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                              bias=norm_cfg is None if bias == "auto" else bias)
        self.norm_name = None
        if norm_cfg is not None:
            kind = norm_cfg["type"]
            if kind == "GN":
                self.norm_name = "gn"
                self.gn = nn.GroupNorm(norm_cfg["num_groups"], out_channels)
            elif kind == "BN":
                self.norm_name = "bn"
                self.bn = nn.BatchNorm2d(out_channels)
            else:
                raise NotImplementedError(f"stub from tests/easycv_reference.py: norm {kind}")
        if act_cfg is not None:
            if act_cfg["type"] != "ReLU":
                raise NotImplementedError(f"stub from tests/easycv_reference.py: activation {act_cfg['type']}")
            self.activate = nn.ReLU(inplace=inplace)

    @property
    def norm(self):
        return getattr(self, self.norm_name)


def normal_init(module, mean=0.0, std=1.0, bias=0.0):
    """mmcv's normal_init: normal weights, constant bias."""
    nn.init.normal_(module.weight, mean, std)
    if getattr(module, "bias", None) is not None:
        nn.init.constant_(module.bias, bias)


def _install_framework_stubs() -> None:
    """What the YOLOX-PAI module files import but building and running the networks does not use:
    mmcv (its jit decorator; ConvModule and normal_init for the TOOD head, stand-ins above), EasyCV's
    registries and builders (registration only), torchvision's box ops (NMS at inference, not in the network). The detection utilities and the loss package
    get the names those files import from their own module files."""
    if "easycv.models.registry" in sys.modules and hasattr(sys.modules["easycv.models.registry"], "BACKBONES"):
        return
    from tests.reference import install_torchvision_stub, stub_module

    def unavailable(*args, **kwargs):
        raise RuntimeError("stub from tests/easycv_reference.py: not available")

    install_torchvision_stub()
    stub_module("torchvision.ops.boxes", box_area=unavailable, nms=unavailable)
    stub_module("mmcv", jit=lambda **kwargs: (lambda fn: fn))
    stub_module("mmcv.cnn", ConvModule=ConvModule, normal_init=normal_init)
    registries = {n: _Registry(n) for n in ("BACKBONES", "NECKS", "HEADS", "LOSSES", "MODELS", "ATTENTION",
                                            "FEEDFORWARD_NETWORK", "POSITIONAL_ENCODING", "TRANSFORMER")}
    stub_module("easycv.models.registry", **registries)
    stub_module("easycv.models.builder", **registries, build_head=unavailable, build_backbone=unavailable,
          build_neck=unavailable, build_model=unavailable)
    utils = sys.modules["easycv.models.detection.utils"]
    boxes = importlib.import_module("easycv.models.detection.utils.boxes")
    utils.__dict__.update({k: v for k, v in vars(boxes).items() if not k.startswith("_")})
    post = importlib.import_module("easycv.models.detection.utils.postprocess")
    utils.postprocess = post.postprocess
    iou = importlib.import_module("easycv.models.loss.iou_loss")
    sys.modules["easycv.models.loss"].YOLOX_IOULoss = iou.YOLOX_IOULoss
