#!/usr/bin/env bash
# Install the reference implementations of the tests: official YOLOX (two versions), EasyCV (YOLOX-PAI) and
# modelscope (DAMO-YOLO).
# 1. yolox 0.3.0 (official 2021-2022, the box_or_center prior) into this environment. Its sdist compiles a
#    C++ op whose setup.py imports torch, and it pins old onnx versions, hence --no-deps --no-build-isolation
#    (what it imports at runtime comes with the project's [dev] extra).
# 2. official YOLOX's current code (pixeltable-yolox 0.4.3, the center prior) into .venv/yolox-current: it
#    also imports as `yolox`, so it gets its own environment, which sees this environment's packages (torch
#    and the rest) after its own, through a .pth file (--system-site-packages would show the base
#    interpreter's instead where this environment is itself a venv). tests/yolox_current_reference.py runs in it.
set -euo pipefail
cd "$(dirname "$0")/.."
if python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('yolox') is None)"; then
  echo "official yolox already installed"
else
  python -m pip install --no-deps --no-build-isolation "yolox==0.3.0"
fi
current=.venv/yolox-current
if [ -x "$current/bin/python" ] && "$current/bin/python" -c "import importlib.metadata as m; assert m.version('pixeltable-yolox') == '0.4.3'" 2>/dev/null; then
  echo "official YOLOX's current code already in $current"
else
  rm -rf "$current"
  python -m venv "$current"
  "$current/bin/python" -m pip install -q --no-deps "pixeltable-yolox==0.4.3"
  own=$("$current/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  python -c "import site; print('\n'.join(site.getsitepackages()))" > "$own/_yolox5_parent_environment.pth"
fi
# 3. EasyCV's YOLOX-PAI modules (pai-easycv 0.11.7) with --no-deps: its package __init__ files import mmcv and
#    a training framework; tests/easycv_reference.py imports the module files themselves, unchanged.
if python -c "import importlib.metadata as m, sys; sys.exit(m.version('pai-easycv') != '0.11.7')" 2>/dev/null; then
  echo "pai-easycv 0.11.7 already installed"
else
  python -m pip install -q --no-deps "pai-easycv==0.11.7"
fi
# 4. DAMO-YOLO's modules as modelscope ships them (modelscope 1.40.2) with --no-deps: its package __init__ files
#    import the hub, registries and a training framework; tests/damo_reference.py imports the module files
#    themselves, unchanged, and reads DAMO's configs and TinyNAS structures from tests/data/damo_configs.
if python -c "import importlib.metadata as m, sys; sys.exit(m.version('modelscope') != '1.40.2')" 2>/dev/null; then
  echo "modelscope 1.40.2 already installed"
else
  python -m pip install -q --no-deps "modelscope==1.40.2"
fi
