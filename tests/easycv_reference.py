"""EasyCV's YOLOX-PAI module files (pai-easycv 0.11.7) as references for tests and benchmarks.

tests/install_reference.sh installs pai-easycv with --no-deps: its package ``__init__`` files import
mmcv, the registries and the rest of a training framework that building the modules does not need.
So the parent packages are stand-ins whose ``__path__`` is the installed folder (their ``__init__``
files never run) and each module file is imported as it is, unchanged; its own imports of sibling
files (``easycv.models.utils.ops``) resolve through the same stand-ins.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
import types
from pathlib import Path

EASYCV_VERSION = "0.11.7"


def easycv_root() -> Path | None:
    """The installed ``easycv`` folder, or None. With REQUIRE_REFERENCE=1 (CI) a missing one is an error."""
    try:
        dist = importlib.metadata.distribution("pai-easycv")
    except importlib.metadata.PackageNotFoundError:
        if os.environ.get("REQUIRE_REFERENCE") == "1":
            raise
        return None
    if dist.version != EASYCV_VERSION:
        raise ImportError(f"pai-easycv {dist.version} installed, the tests compare with {EASYCV_VERSION}")
    return Path(dist.locate_file("easycv"))


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


def _stub(name: str, **attrs) -> types.ModuleType:
    module = sys.modules.get(name) or types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


def _install_framework_stubs() -> None:
    """What the YOLOX-PAI module files import but building and running the networks does not use:
    mmcv (its jit decorator), EasyCV's registries and builders (registration only), torchvision's
    box ops (NMS at inference, not in the network). The detection utilities and the loss package
    get the names those files import from their own module files."""
    if "easycv.models.registry" in sys.modules and hasattr(sys.modules["easycv.models.registry"], "BACKBONES"):
        return
    from tests.reference import install_torchvision_stub

    def unavailable(*args, **kwargs):
        raise RuntimeError("stub from tests/easycv_reference.py: not available")

    install_torchvision_stub()
    _stub("torchvision.ops.boxes", box_area=unavailable, nms=unavailable)
    _stub("mmcv", jit=lambda **kwargs: (lambda fn: fn))
    registries = {n: _Registry(n) for n in ("BACKBONES", "NECKS", "HEADS", "LOSSES", "MODELS", "ATTENTION",
                                            "FEEDFORWARD_NETWORK", "POSITIONAL_ENCODING", "TRANSFORMER")}
    _stub("easycv.models.registry", **registries)
    _stub("easycv.models.builder", **registries, build_head=unavailable, build_backbone=unavailable,
          build_neck=unavailable, build_model=unavailable)
    utils = sys.modules["easycv.models.detection.utils"]
    boxes = importlib.import_module("easycv.models.detection.utils.boxes")
    utils.__dict__.update({k: v for k, v in vars(boxes).items() if not k.startswith("_")})
    post = importlib.import_module("easycv.models.detection.utils.postprocess")
    utils.postprocess = post.postprocess
    iou = importlib.import_module("easycv.models.loss.iou_loss")
    sys.modules["easycv.models.loss"].YOLOX_IOULoss = iou.YOLOX_IOULoss
