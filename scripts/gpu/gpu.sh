#!/usr/bin/env bash
# Every GPU check of a lent device session, as one script (under 8 minutes on an H100/H200):
# the CUDA tests, the trial-speed and torch.compile benchmarks on the device, then the latency
# repeats on the host's CPU. Each step has
# a time limit, so one slow step cannot eat the lease. Run from the repository root with the
# package importable (installed, or PYTHONPATH=.):  bash scripts/gpu/gpu.sh
# The research part that follows it on a lease: bash scripts/gpu/gpu_resnet50.sh
set -uo pipefail
PY=${PYTHON:-python3}
step() { local limit=$1; shift; echo "== $* ($(date -u +%T), limit ${limit}s)"; timeout "$limit" "$@"; echo "exit $?"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
step 75 $PY -m pytest -q -p no:cacheprovider -o addopts= tests/test_cuda.py   # one process: no xdist workers
step 50 $PY -m benchmarks trial-speed --device cuda --train 10000 --epochs 3 --workers 8
step 70 $PY -m benchmarks compile --device cuda --images 20000
# validation passes by evaluation batch size (kdsearch evaluates at 1024 on a GPU)
step 60 $PY -m benchmarks eval --device cuda --batches 256 4096 --rounds 3
# one tiny student's step in images/s, and final training's models side by side on the device (--jobs)
step 120 $PY -m benchmarks concurrent --device cuda --jobs 4 8 --images 20480 --epochs 3
# latency repeats on this machine's CPU (a host whose speed may hold still, unlike the 2-core guest's)
step 150 $PY -m benchmarks latency --students 20 --workers 2
