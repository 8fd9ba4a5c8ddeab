#!/usr/bin/env bash
# Three clean virtual environments for benchmarks/bench_loaders.py, each installed as its users do:
#   DIR/ours         torch 2.13.0 (CPU), then this project: pip install -e .
#   DIR/yolov5       torch 2.14.1 + torchvision 0.29.1 (the pair that imports together here), yolov5==7.0.14
#   DIR/ultralytics  the same torch pair, then ultralytics 8.x
# Usage: bash benchmarks/loader_envs.sh DIR    (about 12 GB: the reference pair is a CUDA build)
set -euo pipefail
dir=${1:?usage: bash benchmarks/loader_envs.sh DIR}
repo=$(cd "$(dirname "$0")/.." && pwd)
make_env() {  # name, then what pip installs after torch
    local name=$1; shift
    [ -x "$dir/$name/bin/python" ] && { echo "$dir/$name exists, kept"; return; }
    python -m venv "$dir/$name"
    "$dir/$name/bin/pip" install -q "$@"
}
make_env ours torch==2.13.0 && "$dir/ours/bin/pip" install -q -e "$repo"
make_env yolov5 torch==2.14.1 torchvision==0.29.1 && "$dir/yolov5/bin/pip" install -q yolov5==7.0.14 "setuptools<81"  # YOLOv5 imports pkg_resources
make_env ultralytics torch==2.14.1 torchvision==0.29.1 && "$dir/ultralytics/bin/pip" install -q 'ultralytics<9'
echo "environments ready under $dir"
