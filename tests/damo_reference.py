"""DAMO-YOLO's module files (modelscope 1.40.2) as references for tests and benchmarks.

tests/install_reference.sh installs modelscope with --no-deps: its package ``__init__`` files import the hub,
the registries and the lazy-import machinery of a whole framework that building the detectors does not need.
So the parent packages are stand-ins whose ``__path__`` is the installed folder (their ``__init__`` files
never run) and each module file is imported as it is, unchanged; its own imports of sibling files
(``...damo.base_models.core.ops``) resolve through the same stand-ins. Three package ``__init__`` files are
the exception, imported as module files like the others because they are where DAMO defines its build
functions: ``base_models/{backbones,necks,heads}/__init__.py`` (``build_backbone``, ``build_neck``,
``build_head``; each imports its sibling module files and nothing else).

The wheel holds DAMO-YOLO's code but not its configs or TinyNAS structures: those are unedited copies of
tinyvision/DAMO-YOLO's files in ``tests/data/damo_configs`` (Apache-2.0, its LICENSE beside them; or $DAMO_CONFIGS).
``damo_config`` reads them with ``ast`` (no exec); ``build_damo_model`` builds the detector with DAMO's own
``build_local_model`` (the function DAMO's converter and trainer call), i.e. ``Detector``'s
``build_backbone`` / ``build_neck`` / ``build_head``, ``init_bn`` (BN eps 1e-3, momentum 0.03) and
``init_weights``.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import sys
import types
from pathlib import Path

import torch
from torch import nn

from tests.reference import randomize_norms

MODELSCOPE_VERSION = "1.40.2"
DAMO = "modelscope.models.cv.tinynas_detection.damo"
DAMO_SIZES = ("t", "s", "m", "l")
DAMO_CONFIG_FILES = {"t": "damoyolo_tinynasL20_T.py", "s": "damoyolo_tinynasL25_S.py",
                     "m": "damoyolo_tinynasL35_M.py", "l": "damoyolo_tinynasL45_L.py"}
# the packages whose __init__ runs: DAMO's build functions live there
_BUILDER_PACKAGES = tuple(f"{DAMO}.base_models.{p}" for p in ("backbones", "necks", "heads"))


def damo_root() -> Path | None:
    """The installed ``damo`` folder (modelscope/models/cv/tinynas_detection/damo), or None. With
    REQUIRE_REFERENCE=1 (CI) a missing one is an error."""
    from tests.reference import reference_distribution

    dist = reference_distribution("modelscope", MODELSCOPE_VERSION)
    return None if dist is None else Path(dist.locate_file("modelscope")) / "models" / "cv" / "tinynas_detection" / "damo"


def damo_configs_root() -> Path | None:
    """The folder of DAMO-YOLO's configs and TinyNAS structures: $DAMO_CONFIGS, else tests/data/damo_configs
    (or shared/reference/damo_configs next to this checkout); None when absent (an error with
    REQUIRE_REFERENCE=1)."""
    repo = Path(__file__).resolve().parents[1]
    candidates = [Path(os.environ["DAMO_CONFIGS"])] if os.environ.get("DAMO_CONFIGS") else [
        repo / "tests" / "data" / "damo_configs", repo.parent / "shared" / "reference" / "damo_configs"]
    for root in candidates:
        if (root / "configs").is_dir() and (root / "nas_backbones").is_dir():
            return root
    if os.environ.get("REQUIRE_REFERENCE") == "1":
        raise FileNotFoundError(f"DAMO-YOLO configs not found in {', '.join(map(str, candidates))}")
    return None


def damo_module(name: str) -> types.ModuleType:
    """Import module file ``name`` of the damo package without running any package ``__init__`` (but the
    three that define build_backbone / build_neck / build_head). ``name`` is the full dotted name
    (``modelscope.models.cv.tinynas_detection.damo.base_models.core.ops``) or the same from ``damo.``
    (``damo.base_models.core.ops``)."""
    root = damo_root()
    if root is None:
        raise ImportError("modelscope not installed (bash tests/install_reference.sh)")
    if name == "damo" or name.startswith("damo."):
        name = DAMO + name[len("damo"):]
    if name != DAMO and not name.startswith(DAMO + "."):
        raise ValueError(f"not a module of {DAMO}: {name}")
    modelscope = root.parents[3]
    packages = [("modelscope", modelscope), ("modelscope.models", modelscope / "models"),
                ("modelscope.models.cv", modelscope / "models" / "cv"),
                ("modelscope.models.cv.tinynas_detection", root.parent),
                ("modelscope.models.base", modelscope / "models" / "base"),
                ("modelscope.utils", modelscope / "utils")]
    packages += [(".".join((DAMO, *init.parent.relative_to(root).parts)), init.parent)
                 for init in [root / "__init__.py", *sorted(root.rglob("__init__.py"))]]
    for package, folder in packages:  # every package: a stand-in
        if package not in sys.modules:
            stand_in = types.ModuleType(package)
            stand_in.__path__ = [str(folder)]
            sys.modules[package] = stand_in
    _install_framework_stubs()
    for package in _BUILDER_PACKAGES:
        _import_package_file(package, root)
    return importlib.import_module(name)


def _import_package_file(package: str, root: Path) -> types.ModuleType:
    """The package's ``__init__.py`` imported as a module file, unchanged, in place of its stand-in."""
    if getattr(sys.modules.get(package), "__file__", None):
        return sys.modules[package]
    folder = root.joinpath(*package[len(DAMO) + 1:].split("."))
    spec = importlib.util.spec_from_file_location(package, folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    stand_in, module = sys.modules.get(package), importlib.util.module_from_spec(spec)
    sys.modules[package] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules[package] = stand_in
        raise
    parent, _, child = package.rpartition(".")
    setattr(sys.modules[parent], child, module)
    return module


# --- configs -------------------------------------------------------------------------------------------------

def damo_config(size: str) -> dict:
    """DAMO-YOLO's model settings of one size, read from its config file (``configs/damoyolo_tinynasL*.py``)
    without executing it: ``{"backbone": {...}, "neck": {...}, "head": {...}, "structure": [...],
    "config_file": path}``.

    The config files assign dict literals (``TinyNAS = {...}``, then ``self.model.backbone = TinyNAS``); their
    one variable, ``structure = self.read_structure('./damo/.../nas_backbones/<file>.txt')``, is resolved
    explicitly: ``backbone["net_structure_str"]`` is that file's text as DAMO's ``read_structure`` returns it
    (the key upstream DAMO's loader reads) and ``backbone["structure_file"]`` its path (the key modelscope's
    copy of the loader reads instead). ``structure`` is the block list the loader builds from that text
    (``ast.literal_eval`` of the text without whitespace, ``nbitsA`` / ``nbitsW`` deleted from every block:
    quantisation bit widths the model does not use)."""
    if size not in DAMO_SIZES:
        raise ValueError(f"size must be one of {DAMO_SIZES}, not {size!r}")
    root = damo_configs_root()
    if root is None:
        raise FileNotFoundError("DAMO-YOLO configs not found (tests/data/damo_configs or $DAMO_CONFIGS)")
    path = root / "configs" / DAMO_CONFIG_FILES[size]
    tree = ast.parse(path.read_text(), filename=str(path))
    init = next(node for cls in tree.body if isinstance(cls, ast.ClassDef) and cls.name == "Config"
                for node in cls.body if isinstance(node, ast.FunctionDef) and node.name == "__init__")
    local, model, structure_file = {}, {}, None
    for stmt in init.body:
        if not isinstance(stmt, ast.Assign) or len(stmt.targets) != 1:
            continue
        target, value = stmt.targets[0], stmt.value
        if isinstance(target, ast.Name) and _is_read_structure(value):
            structure_file = root / "nas_backbones" / Path(ast.literal_eval(value.args[0])).name
            local[target.id] = structure_file.read_text()
        elif isinstance(target, ast.Name) and isinstance(value, ast.Dict):
            local[target.id] = _literal(value, local, path)
        elif _dotted(target)[:2] == ["self", "model"] and len(_dotted(target)) == 3:
            part = _dotted(target)[2]
            if isinstance(value, ast.Name):
                model[part] = dict(local[value.id])
            else:
                model[part] = _literal(value, local, path)
    if set(model) != {"backbone", "neck", "head"} or structure_file is None:
        raise ValueError(f"{path}: expected backbone, neck and head settings and a structure file, got {model}")
    model["backbone"]["structure_file"] = str(structure_file)
    model["structure"] = tinynas_structure(model["backbone"]["net_structure_str"])
    model["config_file"] = str(path)
    return model


def tinynas_structure(net_structure_str: str) -> list[dict]:
    """What DAMO's ``load_tinynas_net`` (backbones/tinynas_res.py and tinynas_csp.py) makes of a structure
    text: every whitespace character dropped (``''.join(x.strip() for x in text)``), the literal evaluated,
    ``nbitsA`` and ``nbitsW`` deleted from every block."""
    struct_info = ast.literal_eval("".join(x.strip() for x in net_structure_str))
    for layer in struct_info:
        layer.pop("nbitsA", None)
        layer.pop("nbitsW", None)
    return struct_info


def _is_read_structure(node: ast.AST) -> bool:
    return (isinstance(node, ast.Call) and _dotted(node.func) == ["self", "read_structure"]
            and len(node.args) == 1 and not node.keywords)


def _dotted(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Attribute):
        return _dotted(node.value) + [node.attr]
    return [node.id] if isinstance(node, ast.Name) else []


def _literal(node: ast.AST, local: dict, path: Path):
    """``ast.literal_eval`` of a dict literal whose values may also name a variable assigned before it."""
    if isinstance(node, ast.Dict):
        return {ast.literal_eval(k): _literal(v, local, path) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.Name):
        if node.id not in local:
            raise ValueError(f"{path}:{node.lineno}: {node.id} is not a variable the config assigns before")
        return local[node.id]
    return ast.literal_eval(node)


class _EasyDict(dict):
    """A dict with attribute access, as DAMO's configs are (``damo.config.base.Config`` and modelscope's
    ``parse_config`` give EasyDicts): ``Detector`` reads ``config.model.backbone``, the backbone loader
    ``backbone_cfg.out_indices``; the build functions deep-copy the dict and pop ``name``."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


# --- models --------------------------------------------------------------------------------------------------

def build_damo_model(size: str, nc: int = 80, seed: int = 0) -> nn.Module:
    """DAMO-YOLO-{T,S,M,L}'s detector as DAMO builds it from its config (``build_local_model``: ``Detector``
    with ``build_backbone`` / ``build_neck`` / ``build_head``, then ``init_model``), ``nc`` classes, with
    random BN statistics and affine values and random head Scale values (1.0 at init), so that the eval
    outputs depend on every weight; in eval mode with ``head.nms = False`` (as modelscope's DamoYolo and
    DAMO's converter set it).

    ``model(images)`` (RGB 0..255, no normalisation; sides multiples of 32) then returns what DAMO's detector
    returns at inference without NMS: ``(scores, boxes)``, scores [B, N, nc] after sigmoid and boxes
    [B, N, 4] x1y1x2y2 in input pixels, N = sum of H/s * W/s over strides 8, 16, 32 (level by level, row
    major). ``damo_head_outputs`` gives the per-level tensors before decoding.

    modelscope's ZeroHead ignores the config's ``legacy=False`` (it takes ``**kwargs``) and always builds
    nc + 1 class channels (``head.gfl_cls.{i}.weight`` is [nc + 1, C, 3, 3]); the eval path drops the last
    one (``[:, :, :num_classes]``), so the outputs equal upstream DAMO's head with ``legacy=False`` (nc
    channels) given the same first nc rows. The extra row costs 9·C + 1 parameters per level (T: 4,035,
    S/M/L: 8,067) and is what distinguishes modelscope's checkpoints from upstream ones."""
    detector = damo_module(f"{DAMO}.detectors.detector")
    settings = damo_config(size)
    head = dict(settings["head"], num_classes=nc)
    config = _EasyDict(model=_EasyDict(backbone=_EasyDict(settings["backbone"]),
                                       neck=_EasyDict(settings["neck"]), head=_EasyDict(head)))
    model = detector.build_local_model(config, "cpu")
    model.head.nms = False
    randomize_norms(model, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for scale in model.head.scales:
            scale.scale.copy_(torch.rand((), generator=g) + 0.5)
    return model.eval()


def deploy(model: nn.Module) -> nn.Module:
    """What DAMO's converter (tools/converter.py) does to the model before export: ``replace_module(model,
    nn.SiLU, SiLU)`` (its export-friendly ``x * sigmoid(x)``), ``switch_to_deploy()`` on every ``RepConv``
    (3x3 and 1x1 conv-BN branches folded into one biased 3x3 conv) and ``head.nms = False``. In place;
    returns the model."""
    ops = damo_module(f"{DAMO}.base_models.core.ops")
    model_utils = damo_module(f"{DAMO}.utils.model_utils")
    model = model_utils.replace_module(model, nn.SiLU, ops.SiLU)
    for layer in model.modules():
        if isinstance(layer, ops.RepConv):
            layer.switch_to_deploy()
    model.head.nms = False
    return model


def damo_head_outputs(model: nn.Module, images: torch.Tensor) -> dict:
    """One eval forward of ``model`` (from ``build_damo_model``) with the head's tensors before decoding, taken
    by forward hooks (the reference's code runs unchanged):

    - ``cls_logits``: per level [B, nc + 1, H, W], the class convs' outputs before the sigmoid (the last
      channel is modelscope's legacy extra class, dropped by the decode);
    - ``reg_logits``: per level [B, 4 * (reg_max + 1), H, W] = [B, 68, H, W], the box convs' outputs after the
      level's Scale, before the softmax: channel ``side * 17 + bin``, sides (left, top, right, bottom),
      the distance ``sum(bin * softmax)`` in strides;
    - ``scores`` [B, N, nc] and ``boxes`` [B, N, 4]: the eval output (decoded, no NMS)."""
    head = model.head
    cls_logits, reg_logits = [], []
    hooks = [conv.register_forward_hook(lambda m, i, o: cls_logits.append(o)) for conv in head.gfl_cls]
    hooks += [scale.register_forward_hook(lambda m, i, o: reg_logits.append(o)) for scale in head.scales]
    try:
        scores, boxes = model(images)
    finally:
        for hook in hooks:
            hook.remove()
    return {"cls_logits": cls_logits, "reg_logits": reg_logits, "scores": scores, "boxes": boxes}


# --- stubs ---------------------------------------------------------------------------------------------------

class TorchModel(nn.Module):
    """Stand-in for modelscope's ``TorchModel`` (``Model`` + ``nn.Module``), the base class of DAMO's
    ``Detector``: the real one's module imports the hub, registries and config system. ``Detector`` calls
    ``super().__init__()`` only; the real ``__init__`` records model_dir bookkeeping and the real ``__call__``
    is ``postprocess(forward(...))`` with ``Model.postprocess`` returning its input, so the network and its
    outputs are the same."""

    def __init__(self, model_dir=None, *args, **kwargs):
        super().__init__()


def _install_framework_stubs() -> None:
    """What the DAMO module files import but building and running the networks does not use: modelscope's
    TorchModel (above); timm (imported by necks/giraffe_fpn.py, the GiraffeNeck v1 that necks/__init__ imports
    and no T/S/M/L config uses); torchvision's NMS (utils/boxes.py, post-processing only: the real
    torchvision when it imports); thop (utils/model_utils.py's profile, for get_model_info; only when thop is
    not installed). The stand-in damo.utils package gets ``postprocess`` and the other names its
    ``__init__`` takes from utils/boxes.py, which ZeroHead imports (its NMS path, off here)."""
    if "postprocess" in vars(sys.modules[f"{DAMO}.utils"]):
        return
    from tests.reference import install_torchvision_stub, stub_module

    def unavailable(*args, **kwargs):
        raise RuntimeError("stub from tests/damo_reference.py: not available")

    install_torchvision_stub()
    stub_module("modelscope.models.base.base_torch_model", TorchModel=TorchModel)
    if "timm" not in sys.modules:
        class Swish(nn.Module):  # giraffe_fpn's default activation class, only named at import
            def __init__(self, *args, **kwargs):
                raise RuntimeError("stub from tests/damo_reference.py: timm's Swish")

        timm = stub_module("timm", create_model=unavailable)
        timm.models = stub_module("timm.models")
        timm.models.layers = stub_module("timm.models.layers", Swish=Swish, create_conv2d=unavailable,
                                   create_pool2d=unavailable, get_act_layer=unavailable)
    if importlib.util.find_spec("thop") is None:
        stub_module("thop", profile=unavailable)
    boxes = importlib.import_module(f"{DAMO}.utils.boxes")
    sys.modules[f"{DAMO}.utils"].__dict__.update(adjust_box_anns=boxes.adjust_box_anns,
                                                 postprocess=boxes.postprocess)
