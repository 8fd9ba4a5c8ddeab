"""The official YOLOX package as a reference implementation for tests and benchmarks.

Official yolox imports torchvision only for NMS; torchvision cannot be installed beside the CPU
torch used here, so a stub module stands in for it (its ops raise if anything calls them).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types

import torch
from torch import nn

# Official model sizes: name -> (depth, width, depthwise), as in official exps/default/*.py
OFFICIAL_SIZES = {
    "yoloxn": (0.33, 0.25, True),
    "yoloxn_dense": (0.33, 0.25, False),  # official YOLOX-Nano's exp with depthwise=False
    "yoloxt": (0.33, 0.375, False),
    "yoloxs": (0.33, 0.50, False),
    "yoloxm": (0.67, 0.75, False),
    "yoloxl": (1.0, 1.0, False),
    "yoloxx": (1.33, 1.25, False),
}


def stub_module(name: str, **attrs) -> types.ModuleType:
    """sys.modules[name], created empty if absent, with ``attrs`` set: a stand-in for what a reference's
    module files import but building and running its networks does not use."""
    module = sys.modules.get(name) or types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


def reference_distribution(name: str, version: str):
    """The installed distribution ``name`` (importlib.metadata), or None when absent; a missing one is an
    error with REQUIRE_REFERENCE=1 (CI), another version always: the tests compare with ``version``."""
    import importlib.metadata

    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        if os.environ.get("REQUIRE_REFERENCE") == "1":
            raise
        return None
    if dist.version != version:
        raise ImportError(f"{name} {dist.version} installed, the tests compare with {version}")
    return dist


def install_torchvision_stub() -> None:
    """Put a minimal ``torchvision`` in sys.modules when the real one cannot be imported."""
    if "torchvision" in sys.modules:
        return
    try:
        if importlib.util.find_spec("torchvision") is not None:
            importlib.import_module("torchvision")
            return
    except Exception:  # a torchvision that does not match torch fails at import
        sys.modules.pop("torchvision", None)

    def _unavailable(*args, **kwargs):
        raise RuntimeError("torchvision stub: NMS is not available in tests")

    tv = types.ModuleType("torchvision")
    ops = types.ModuleType("torchvision.ops")
    ops.nms = ops.batched_nms = _unavailable
    tv.ops = ops
    tv.__version__ = "0.29.1+stub"  # a PEP 440 version, as recent as the real one: EasyCV compares it
    sys.modules["torchvision"] = tv
    sys.modules["torchvision.ops"] = ops


def official_yolox():
    """The official ``yolox`` package, or None. With REQUIRE_REFERENCE=1 (CI) a missing one is an error."""
    install_torchvision_stub()
    try:
        import yolox.models  # noqa: F401
        return sys.modules["yolox"]
    except ImportError:
        if os.environ.get("REQUIRE_REFERENCE") == "1":
            raise
        return None


def build_official(name: str, nc: int = 80, act: str = "silu") -> nn.Module:
    """An official YOLOX model initialised as ``Exp.get_model`` does (BN eps 1e-3, prior biases)."""
    from yolox.models import YOLOX, YOLOPAFPN, YOLOXHead

    depth, width, depthwise = OFFICIAL_SIZES[name]
    in_channels = [256, 512, 1024]
    backbone = YOLOPAFPN(depth, width, in_channels=in_channels, act=act, depthwise=depthwise)
    head = YOLOXHead(nc, width, in_channels=in_channels, act=act, depthwise=depthwise)
    model = YOLOX(backbone, head)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps, m.momentum = 1e-3, 0.03
    head.initialize_biases(1e-2)
    return model


def randomize_norms(module: nn.Module, seed: int = 0) -> None:
    """Random BN statistics and affine values, with eps 1e-3 / momentum 0.03 (what EasyCV's and DAMO's
    detectors set on every BatchNorm2d, as official YOLOX does), and random GroupNorm affine values."""
    g = torch.Generator().manual_seed(seed)
    for norm in module.modules():
        if isinstance(norm, nn.BatchNorm2d):
            n = norm.num_features
            norm.eps, norm.momentum = 1e-3, 0.03
            norm.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
            norm.running_var.copy_(torch.rand(n, generator=g) + 0.5)
        if isinstance(norm, (nn.BatchNorm2d, nn.GroupNorm)):
            n = norm.weight.numel()
            norm.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            norm.bias.data.copy_(torch.randn(n, generator=g) * 0.2)


@torch.no_grad()
def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BatchNorm affine parameters and statistics, so that eval outputs test every weight."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return model
