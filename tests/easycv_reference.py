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
    return importlib.import_module(name)
