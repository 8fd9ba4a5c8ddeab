#!/usr/bin/env bash
# Install the official YOLOX package as a test reference. Its sdist compiles a C++ op whose
# setup.py imports torch, and it pins old onnx versions, hence --no-deps --no-build-isolation
# (what it imports at runtime comes with the project's [dev] extra).
set -euo pipefail
if python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('yolox') is None)"; then
  echo "official yolox already installed"
else
  python -m pip install --no-deps --no-build-isolation "yolox==0.3.0"
fi
