#!/usr/bin/env bash
# Every GPU check of a lent device session, as one script (under 3 minutes on an H100/H200):
# the CUDA tests, then the trial-speed and torch.compile benchmarks on the device. Each step has
# a time limit, so one slow step cannot eat the lease. Run from the repository root with the
# package importable (installed, or PYTHONPATH=.):  bash benchmarks/gpu.sh
# The research part that follows it on a lease: bash benchmarks/gpu_resnet50.sh
set -uo pipefail
PY=${PYTHON:-python3}
step() { local limit=$1; shift; echo "== $* ($(date -u +%T), limit ${limit}s)"; timeout "$limit" "$@"; echo "exit $?"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
step 75 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py
step 50 $PY benchmarks/bench_trial_speed.py --device cuda --train 10000 --epochs 3 --workers 8
step 70 $PY benchmarks/bench_compile.py --device cuda --images 20000
