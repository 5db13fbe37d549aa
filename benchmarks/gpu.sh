#!/usr/bin/env bash
# Every GPU check of a lent device session, as one script (about 5 minutes on an H100):
# the CUDA tests, then the trial-speed and torch.compile benchmarks on the device.
# Run from the repository root with the package installed:  bash benchmarks/gpu.sh
set -uo pipefail
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python -m pytest -q tests/test_cuda.py tests/test_distill.py tests/test_logits.py
python benchmarks/bench_trial_speed.py --device cuda --train 10000 --epochs 5 --workers 8
python benchmarks/bench_compile.py --device cuda --images 45000
