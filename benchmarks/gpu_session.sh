#!/usr/bin/env bash
# The CUDA checks of the training loop in one go, for a machine with a GPU (CI has none):
# tests/test_cuda.py (assigner/loss on CUDA vs CPU and official YOLOX, float16 AMP steps, train.py on a GPU,
# DDP over NCCL with --sync-bn, the legacy launcher), then the GPU training-step benchmark against
# official YOLOX. Logs go to OUTDIR (default /tmp/gpu_session).
#
#   bash benchmarks/gpu_session.sh [OUTDIR]
#
# Needs torch with CUDA, the project's dependencies (pycocotools, simplejpeg, opencv, pyyaml, tqdm,
# matplotlib) and, for the official rows and tests, the official yolox 0.3.0 package importable (its
# Python files on PYTHONPATH are enough: its C++ op is not used) with loguru, thop and tabulate.
# Without a GPU, tests/test_cuda.py skips and bench_train fails at once.
set -u
out=${1:-/tmp/gpu_session}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv | tee "$out/gpu.txt"
$py -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" | tee -a "$out/gpu.txt"
timeout "${TEST_TIMEOUT:-300}" $py -m pytest tests/test_cuda.py -q -rs -p no:cacheprovider 2>&1 | tee "$out/test_cuda.log" | tail -25
timeout "${BENCH_TIMEOUT:-240}" $py -m benchmarks.bench_train --device cuda --models yoloxs yoloxs_rslu \
    --sizes 640 --batch 16 64 --runs "${RUNS:-10}" ${BENCH_ARGS:-} 2>&1 | grep -v Warning | tee "$out/bench_train_cuda.log" | tail -22
# the main job on a GPU: python train.py's demo defaults (yoloxn, 320, 15 epochs, float16 AMP)
timeout "${DEMO_TIMEOUT:-150}" $py train.py --device 0 --project "$out/runs" --name demo --noplots 2>&1 \
    | tr '\r' '\n' | grep -E "epochs completed|all |mixed|DDP|Error|error|100%" | tee "$out/demo_train.log"
cp "$out/runs/demo/results.csv" "$out/demo_results.csv" 2>/dev/null
rm -rf "$out/runs"
